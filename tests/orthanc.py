"""A real Orthanc (Debian's ``orthanc`` package) for the tests: started on free ports on
127.0.0.1 with a generated configuration, stopped, frozen (SIGSTOP) and thawed by the test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.pacs.scp import free_port

ORTHANC = shutil.which("Orthanc", path="/usr/sbin:/usr/bin:/usr/local/bin")
AE_TITLE = "ORTHANC"


@dataclass
class Orthanc:
    """One Orthanc server; ``hardened`` checks the called AE title and stores only from the
    modalities registered in its configuration (``modalities``: name -> (AE, host, port))."""

    root: Path
    hardened: bool = True
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    #: More configuration options (e.g. ``JpegTransferSyntaxAccepted``, ``LuaScripts``).
    extra_config: dict[str, Any] = field(default_factory=dict)
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "orthanc.log"

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Name": "cxr-triage-tests",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "DicomAet": AE_TITLE,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "DicomModalities": {name: list(entry) for name, entry in self.modalities.items()},
        }
        if self.hardened:
            config.update(DicomCheckCalledAet=True, DicomAlwaysAllowStore=False)
        config.update(self.extra_config)
        return config

    def start(self) -> None:
        """Start and wait for the REST API of this very process (its DICOM port checked, so
        a server of another test on a reused port is never mistaken for it). A free HTTP
        port taken by someone else before Orthanc bound it is replaced and retried."""
        if ORTHANC is None:
            raise RuntimeError("Orthanc is not installed (apt-get install orthanc)")
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            offset = self.log.stat().st_size if self.log.exists() else 0
            if self._start_once():
                return
            if "HTTP server is privileged or already in use" not in self.log.read_text()[offset:]:
                break
            self.http_port = free_port()
        raise RuntimeError(f"Orthanc did not start:\n{self.log.read_text()[-3000:]}")

    def _start_once(self) -> bool:
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [ORTHANC, str(path)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if self.get("/system").get("DicomPort") == self.dicom_port:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as r:
            return bytes(r.read())

    def post(self, path: str, body: Any) -> Any:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def instances_in_study(self, study_instance_uid: str) -> list[dict[str, str]]:
        """Every instance of the study: SOP Class and Instance UIDs, Modality."""
        found = self.post(
            "/tools/find",
            {
                "Level": "Instance",
                "Query": {"StudyInstanceUID": study_instance_uid},
                "Expand": True,
                "RequestedTags": ["SOPClassUID"],
            },
        )
        instances = []
        for item in found:
            tags = self.get(f"/instances/{item['ID']}/simplified-tags")
            instances.append(
                {
                    "SOPClassUID": tags.get("SOPClassUID", ""),
                    "SOPInstanceUID": tags.get("SOPInstanceUID", ""),
                    "Modality": tags.get("Modality", ""),
                }
            )
        return instances

    def orthanc_id(self, sop_instance_uid: str) -> str:
        [found] = self.post(
            "/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}}
        )
        return str(found)
