-- The schema of the last release before versioned migrations, as it
-- opened a new database (store.go at main 487c492: the schema constant,
-- then migrate()), for TestMigrateFromUnversioned.
CREATE TABLE IF NOT EXISTS apps (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	name TEXT NOT NULL UNIQUE,
	repo TEXT NOT NULL,
	webhook_secret TEXT NOT NULL DEFAULT '',
	next_number INTEGER NOT NULL DEFAULT 1,
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS builds (
	-- AUTOINCREMENT: an id is never reused, even after its app is deleted
	-- (SSH credentials and signed URLs name builds by id).
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
	number INTEGER NOT NULL,
	workflow TEXT NOT NULL,
	workflow_name TEXT NOT NULL,
	branch TEXT NOT NULL,
	commit_sha TEXT NOT NULL,
	status TEXT NOT NULL,
	trigger TEXT NOT NULL,
	started_by TEXT NOT NULL DEFAULT '',
	message TEXT NOT NULL DEFAULT '',
	max_duration INTEGER NOT NULL,
	spec TEXT NOT NULL DEFAULT '',
	steps TEXT NOT NULL DEFAULT '[]',
	created_at INTEGER NOT NULL,
	started_at INTEGER,
	finished_at INTEGER,
	ssh_enabled INTEGER NOT NULL DEFAULT 0,
	ssh_state TEXT NOT NULL DEFAULT '',
	ssh_expires_at INTEGER,
	ssh_expires_because TEXT NOT NULL DEFAULT '',
	ssh_closed_reason TEXT NOT NULL DEFAULT '',
	ssh_connections INTEGER NOT NULL DEFAULT 0,
	ssh_sessions TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS build_ssh (
	build_id INTEGER PRIMARY KEY REFERENCES builds(id) ON DELETE CASCADE,
	private_key BLOB,
	certificate TEXT NOT NULL,
	public_key TEXT NOT NULL,
	host_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS build_events (
	id INTEGER PRIMARY KEY,
	build_id INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
	time INTEGER NOT NULL,
	kind TEXT NOT NULL,
	data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS build_events_build ON build_events(build_id, id);
CREATE INDEX IF NOT EXISTS builds_status ON builds(status);
CREATE INDEX IF NOT EXISTS builds_app ON builds(app_id, id);
-- A build's log in chunks of consecutive lines of one step: lines first
-- to last, each ended by a newline in data.
CREATE TABLE IF NOT EXISTS log_chunks (
	build_id INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
	first INTEGER NOT NULL,
	last INTEGER NOT NULL,
	step INTEGER NOT NULL,
	time INTEGER NOT NULL,
	data BLOB NOT NULL,
	encoding TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (build_id, first)
);
CREATE TABLE IF NOT EXISTS tokens (
	hash TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	admin INTEGER NOT NULL,
	apps TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL
);
-- What that release's migrate() added at open.
ALTER TABLE builds ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
