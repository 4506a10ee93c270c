-- cxr-triage: the read-only role for PACS/RIS-side readers of the worklist (PostgreSQL).
--
-- Run once per database, as the owner of the worklist table (the role the migrations run
-- as), after `cxr-triage db upgrade`:
--     psql "postgresql://OWNER@HOST/DB" -v ON_ERROR_STOP=1 -f db/sql/worklist_reader.sql
-- Then give each reading system its own login in that role (password from your vault,
-- never from this repository):
--     CREATE ROLE pacs_ris LOGIN PASSWORD '...' IN ROLE cxr_worklist_reader;
-- The role can read every table in schema public and write nothing. Idempotent.
-- SQLite (the embedded default) has no roles: protect its file with file permissions.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cxr_worklist_reader') THEN
        CREATE ROLE cxr_worklist_reader NOLOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cxr_worklist_reader', current_database());
END
$$;

-- Sessions of its members are read-only even if a grant is ever added by mistake.
ALTER ROLE cxr_worklist_reader SET default_transaction_read_only = on;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM cxr_worklist_reader;
GRANT USAGE ON SCHEMA public TO cxr_worklist_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO cxr_worklist_reader;
-- Tables that later migrations (run by this same owner) create are readable too.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO cxr_worklist_reader;
