-- Saved queries over bqsteward's audit log: one row per change bqsteward made or refused.
-- Replace {audit} with the audit table: `PROJECT._bqsteward_<location>.audit` (the default, beside
-- the load ledger: e.g. `acme-prod._bqsteward_us.audit`) or the one given with --audit-table.
-- The table is partitioned by day on `time`: keep the time filters, they bound the bytes read.
-- Columns: event_id, time, resource (Kind namespace/name), action, target, subject, role,
-- outcome (done, refused, in_sync, mismatch, failed), etag_before, etag_after, files, rows, bytes,
-- job_ids, duration_ms, delays_ms, category, message, actor, run_id, revision, recorded_at.

-- name: access-to-dataset
-- Who got (or lost) access to dataset @dataset (PROJECT.DATASET) and when, by which resource,
-- revision and run, over the last 90 days.
SELECT time, action, subject AS principal, role, resource, revision, run_id, etag_before, etag_after
FROM {audit}
WHERE target = @dataset AND action IN ('access_added', 'access_removed')
  AND time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 90 DAY)
ORDER BY time;

-- name: delay-per-table
-- End-to-end delay per table over the last day: file uploaded -> its rows in the table, p50 and
-- p99 in seconds, over every file loaded.
SELECT target AS table_ref, COUNT(*) AS files,
  APPROX_QUANTILES(d, 100)[OFFSET(50)] / 1000 AS p50_s,
  APPROX_QUANTILES(d, 100)[OFFSET(99)] / 1000 AS p99_s
FROM {audit}, UNNEST(delays_ms) AS d
WHERE action IN ('load_batch', 'reload') AND time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 DAY)
GROUP BY table_ref
ORDER BY p99_s DESC;

-- name: quarantined-by-category
-- Files quarantined in the last 7 days, per table and category, with the latest.
SELECT target AS table_ref, category, COUNT(*) AS files, MAX(time) AS latest
FROM {audit}
WHERE action = 'quarantined' AND time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 7 DAY)
GROUP BY table_ref, category
ORDER BY files DESC;

-- name: changes-per-revision
-- What each revision of the manifests changed in the last 30 days: changes, resources touched,
-- refusals, first and last change.
SELECT revision, MIN(time) AS first_change, MAX(time) AS last_change, COUNT(*) AS changes,
  COUNT(DISTINCT resource) AS resources, SUM(IF(outcome = 'refused', 1, 0)) AS refused
FROM {audit}
WHERE time >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 30 DAY)
GROUP BY revision
ORDER BY last_change DESC;
