-- cxr-triage: least-privilege roles (db/roles.py writes this; do not edit by hand).
-- Run as the owner of the tables (the login of `cxr-triage db upgrade`), after it:
--     psql ... -v ON_ERROR_STOP=1 -f db/sql/roles.sql
-- or `cxr-triage db roles`. Then give each service its own login in its group:
--     cxr-triage db create-login NAME --role watcher|worker|deliver|web|reader
-- Idempotent.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cxr_watcher') THEN
        CREATE ROLE cxr_watcher NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cxr_worker') THEN
        CREATE ROLE cxr_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cxr_deliver') THEN
        CREATE ROLE cxr_deliver NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cxr_web') THEN
        CREATE ROLE cxr_web NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cxr_worklist_reader') THEN
        CREATE ROLE cxr_worklist_reader NOLOGIN;
    END IF;
END
$$;
DO $$ BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cxr_watcher', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cxr_worker', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cxr_deliver', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cxr_web', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cxr_worklist_reader', current_database());
END $$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON worklist, review_history, result_objects, drift_count, reading_list, reading_list_apart, service_leases, accounts, audit_log, alembic_version FROM PUBLIC, cxr_watcher, cxr_worker, cxr_deliver, cxr_web, cxr_worklist_reader;
REVOKE ALL ON SEQUENCE worklist_id_seq, review_history_id_seq, result_objects_id_seq, accounts_id_seq, audit_log_id_seq FROM PUBLIC, cxr_watcher, cxr_worker, cxr_deliver, cxr_web, cxr_worklist_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM cxr_worklist_reader;
-- cxr_watcher
GRANT USAGE ON SCHEMA public TO cxr_watcher;
GRANT SELECT, INSERT, UPDATE ON worklist TO cxr_watcher;
GRANT SELECT, INSERT, UPDATE ON service_leases TO cxr_watcher;
GRANT SELECT ON alembic_version TO cxr_watcher;
GRANT USAGE ON SEQUENCE worklist_id_seq TO cxr_watcher;
-- cxr_worker
GRANT USAGE ON SCHEMA public TO cxr_worker;
GRANT SELECT, UPDATE ON worklist TO cxr_worker;
GRANT SELECT, INSERT, UPDATE ON result_objects TO cxr_worker;
GRANT SELECT, INSERT, UPDATE ON drift_count TO cxr_worker;
GRANT SELECT ON alembic_version TO cxr_worker;
GRANT USAGE ON SEQUENCE result_objects_id_seq TO cxr_worker;
-- cxr_deliver
GRANT USAGE ON SCHEMA public TO cxr_deliver;
GRANT SELECT ON worklist TO cxr_deliver;
GRANT SELECT, UPDATE ON result_objects TO cxr_deliver;
GRANT SELECT ON alembic_version TO cxr_deliver;
-- cxr_web
GRANT USAGE ON SCHEMA public TO cxr_web;
GRANT SELECT ON worklist TO cxr_web;
GRANT SELECT ON reading_list TO cxr_web;
GRANT SELECT ON reading_list_apart TO cxr_web;
GRANT UPDATE (review_decision, reviewed_by, reviewed_at) ON worklist TO cxr_web;
GRANT SELECT, INSERT ON review_history TO cxr_web;
GRANT SELECT ON result_objects TO cxr_web;
GRANT SELECT ON drift_count TO cxr_web;
GRANT SELECT ON accounts TO cxr_web;
GRANT UPDATE (failed_logins, last_failure_at, locked_until, last_login_at) ON accounts TO cxr_web;
GRANT SELECT, INSERT ON audit_log TO cxr_web;
GRANT SELECT ON alembic_version TO cxr_web;
GRANT USAGE ON SEQUENCE review_history_id_seq, audit_log_id_seq TO cxr_web;
-- cxr_worklist_reader
GRANT USAGE ON SCHEMA public TO cxr_worklist_reader;
GRANT SELECT ON worklist TO cxr_worklist_reader;
GRANT SELECT ON review_history TO cxr_worklist_reader;
GRANT SELECT ON result_objects TO cxr_worklist_reader;
GRANT SELECT ON drift_count TO cxr_worklist_reader;
GRANT SELECT ON reading_list TO cxr_worklist_reader;
GRANT SELECT ON reading_list_apart TO cxr_worklist_reader;
GRANT SELECT ON service_leases TO cxr_worklist_reader;
GRANT SELECT ON alembic_version TO cxr_worklist_reader;
ALTER ROLE cxr_worklist_reader SET default_transaction_read_only = on;
-- Settings of a group do not reach its members: each reader login is read-only itself.
DO $$
DECLARE member name;
BEGIN
    FOR member IN SELECT m.rolname FROM pg_auth_members a
        JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
        WHERE g.rolname = 'cxr_worklist_reader' AND m.rolcanlogin
    LOOP
        EXECUTE format('ALTER ROLE %I SET default_transaction_read_only = on', member);
    END LOOP;
END
$$;
