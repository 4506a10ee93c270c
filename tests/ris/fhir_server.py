"""A recording FHIR endpoint for the tests, its own process: ``python -m tests.ris.fhir_server
PORT RECORD TOKEN [--answers 503,401,...]``.

No FHIR server installs from the registries here (HAPI FHIR is a Java server from Maven), so
this one does what a server's front does with a POST: it checks the bearer token (401),
validates the body as an R4(B) DiagnosticReport with ``fhir.resources`` (400 with an
OperationOutcome), honours ``If-None-Exist: identifier=system|value`` (200 with the report
it already holds: a conditional create), else stores it (201, Location). ``GET /metadata``
answers a CapabilityStatement. ``--answers`` forces statuses on the first POSTs. Every POST
is recorded as a JSON line: the status given, whether a token came, and the resource; the
line is written before the answer goes out, so a test that reads the record once its client
has the answer finds it there (on a loaded CI it sometimes read an empty record).
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fhir.resources.R4B.diagnosticreport import DiagnosticReport

LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: Server  # type: ignore[assignment]

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def _answer(self, status: int, body: dict | None = None, **headers: str) -> None:  # type: ignore[type-arg]
        """Keep the answer; :meth:`_send` sends it (a POST's after its record line)."""
        self._reply = (status, body, headers)

    def _send(self) -> None:
        status, body, headers = self._reply
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.endswith("/metadata"):
            self._answer(200, {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})
        else:
            self._answer(404)
        self._send()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        status, resource = self._handle(body)
        with LOCK, self.server.record.open("a", encoding="utf-8") as out:
            out.write(
                json.dumps(
                    {
                        "status": status,
                        "token": self.headers.get("Authorization", ""),
                        "if_none_exist": self.headers.get("If-None-Exist", ""),
                        "content_type": self.headers.get("Content-Type", ""),
                        "resource": resource,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        self._send()

    def _handle(self, body: bytes) -> tuple[int, object]:
        server = self.server
        with LOCK:
            forced = server.answers.pop(0) if server.answers else None
        if forced is not None:
            self._answer(forced, {"resourceType": "OperationOutcome", "issue": []})
            return forced, None
        if self.headers.get("Authorization") != f"Bearer {server.token}":
            self._answer(401)
            return 401, None
        if not self.path.endswith("/DiagnosticReport"):
            self._answer(404)
            return 404, None
        try:
            resource = json.loads(body)
            DiagnosticReport.model_validate(resource)
        except Exception as error:  # noqa: BLE001  any invalid body is a 400
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [
                    {"severity": "error", "code": "invalid", "diagnostics": str(error)[:200]}
                ],
            }
            self._answer(400, outcome)
            return 400, None
        condition = self.headers.get("If-None-Exist", "")
        wanted = condition.removeprefix("identifier=")
        with LOCK:
            for _stored_id, stored in server.reports.items():
                identifiers = {
                    f"{i.get('system', '')}|{i.get('value')}" for i in stored.get("identifier", [])
                }
                if wanted and wanted in identifiers:
                    self._answer(200, stored)
                    return 200, resource
            new_id = str(len(server.reports) + 1)
            resource["id"] = new_id
            server.reports[new_id] = resource
        self._answer(201, resource, Location=f"DiagnosticReport/{new_id}/_history/1")
        return 201, resource


class Server(ThreadingHTTPServer):
    def __init__(self, port: int, record: Path, token: str, answers: list[int]) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.record = record
        self.token = token
        self.answers = answers
        self.reports: dict[str, dict] = {}  # type: ignore[type-arg]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("record", type=Path)
    parser.add_argument("token")
    parser.add_argument("--answers", default="")
    args = parser.parse_args()
    forced = [int(a) for a in args.answers.split(",") if a]
    Server(args.port, args.record, args.token, forced).serve_forever()
