#!/usr/bin/env python3
"""bqsteward's demo helper (Python 3 standard library only).

  demo_tool.py upload --phase 1|2     generate the sample data (deterministic, seeded) and upload it
                                      through fake-gcs-server's JSON API
  demo_tool.py query SQL              run a query on bqemulator and print the rows as a table
  demo_tool.py columns PROJECT.DATASET.TABLE
                                      print a table's or view's column names
  demo_tool.py grant-reader PROJECT.DATASET EMAIL
                                      add a READER entry behind bqsteward's back (drift)

Endpoints come from BIGQUERY_EMULATOR_HOST and STORAGE_EMULATOR_HOST, as for bqsteward.

The data:
  payments (WePay style): payment rows as NDJSON, the same ids updated over time (status and
    modify_time change), an `email` column (PII) and a `card_number` column (PCI, never loaded).
  events (Viant style): a few hundred small NDJSON files of click events, two of them corrupt.
"""

import argparse
import datetime
import json
import os
import random
import sys
import urllib.error
import urllib.parse
import urllib.request

BUCKET = "acme-raw"
PROJECT = "acme-data-eng"
SEED = 20261122
STATUSES = ["authorized", "captured", "settled"]
MERCHANTS = ["bookshop", "coffee", "grocer", "airline", "hotel", "pharmacy"]


def bq_base():
    host = os.environ.get("BIGQUERY_EMULATOR_HOST", "http://127.0.0.1:19050").rstrip("/")
    return f"{host}/bigquery/v2"


def gcs_base():
    return os.environ.get("STORAGE_EMULATOR_HOST", "http://127.0.0.1:19052").rstrip("/")


def http(method, url, body=None, data=None, content_type="application/json"):
    if body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read()
            return json.loads(text) if text else {}
    except urllib.error.HTTPError as e:
        sys.exit(f"demo_tool: {method} {url}: HTTP {e.code}: {e.read().decode(errors='replace')[:500]}")


def put_object(name, payload):
    q = urllib.parse.urlencode({"uploadType": "media", "name": name})
    http("POST", f"{gcs_base()}/upload/storage/v1/b/{BUCKET}/o?{q}", data=payload,
         content_type="application/octet-stream")


def ensure_bucket():
    req = urllib.request.Request(f"{gcs_base()}/storage/v1/b/{BUCKET}")
    try:
        urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        http("POST", f"{gcs_base()}/storage/v1/b?project={PROJECT}", body={"name": BUCKET})


def ts(day, minute):
    return f"2026-11-{day:02d}T{minute // 60:02d}:{minute % 60:02d}:00Z"


def card(rng):
    return "4" + "".join(rng.choice("0123456789") for _ in range(15))


def payment(rng, pid, status, day, minute):
    return {
        "id": pid,
        "merchant": MERCHANTS[pid % len(MERCHANTS)],
        "amount": rng.randint(100, 99999) / 100,
        "currency": "USD",
        "status": status,
        "email": f"customer{pid}@example.com",
        "card_number": card(rng),
        "modify_time": ts(day, minute),
    }


def ndjson(rows):
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


def upload(phase):
    rng = random.Random(SEED * 10 + phase)
    ensure_bucket()
    files = {}
    if phase == 1:
        # 120 payments created on the 20th, then updated on the 21st and 22nd: 4 files.
        created = [payment(rng, i, "authorized", 20, i) for i in range(1, 121)]
        files["payments/dt=2026-11-20/part-0001.json"] = created[:60]
        files["payments/dt=2026-11-20/part-0002.json"] = created[60:]
        files["payments/dt=2026-11-21/part-0001.json"] = [
            payment(rng, i, "captured", 21, i) for i in range(1, 121) if i % 2 == 0]
        files["payments/dt=2026-11-22/part-0001.json"] = [
            payment(rng, i, "settled", 22, i) for i in range(1, 121) if i % 4 == 0]
        # 300 event files of 3-6 events each; two are corrupt.
        for n in range(300):
            hour = n // 25
            rows = [{
                "event_id": f"e{n:03d}-{k}",
                "user_id": rng.randint(1, 500),
                "kind": rng.choice(["view", "click", "purchase"]),
                "event_time": ts(22, hour * 60 + rng.randint(0, 59)),
            } for k in range(rng.randint(3, 6))]
            files[f"events/2026/11/22/{hour:02d}/events-{n:04d}.json"] = rows
    else:
        # New payments, and a correction: payment 8 refunded (a later modify_time).
        new = [payment(rng, i, "authorized", 23, i) for i in range(121, 131)]
        fix = payment(rng, 8, "refunded", 23, 600)
        files["payments/dt=2026-11-23/part-0001.json"] = new + [fix]
        for n in range(300, 305):
            files[f"events/2026/11/23/00/events-{n:04d}.json"] = [{
                "event_id": f"e{n:03d}-0", "user_id": rng.randint(1, 500), "kind": "view",
                "event_time": ts(23, n - 300),
            }]
    for name, rows in sorted(files.items()):
        put_object(name, ndjson(rows))
    corrupt = 0
    if phase == 1:
        put_object("events/2026/11/22/03/events-0077b.json", b'{"event_id": "e077b-0", "user_id": 1\n')
        put_object("events/2026/11/22/09/events-0233b.json", b"\x00\x01 not json at all\n")
        corrupt = 2
    n_pay = sum(1 for f in files if f.startswith("payments/"))
    n_evt = sum(1 for f in files if f.startswith("events/")) + corrupt
    rows = sum(len(r) for f, r in files.items() if f.startswith("payments/"))
    print(f"uploaded to gs://{BUCKET}/: {n_pay} payment files ({rows} rows), {n_evt} event files"
          + (f" ({corrupt} corrupt)" if corrupt else ""))


def query_rows(sql):
    body = {"query": sql, "useLegacySql": False, "formatOptions": {"useInt64Timestamp": True}}
    r = http("POST", f"{bq_base()}/projects/{PROJECT}/queries", body=body)
    if r.get("errors"):
        sys.exit(f"demo_tool: query failed: {r['errors']}")
    fields = r.get("schema", {}).get("fields", [])
    cols = [f["name"] for f in fields]
    stamp = [f.get("type") == "TIMESTAMP" for f in fields]
    rows = [[show_time(c.get("v")) if stamp[i] else c.get("v") for i, c in enumerate(row["f"])]
            for row in r.get("rows", [])]
    return cols, rows


def show_time(micros):
    if micros is None:
        return None
    t = datetime.datetime.fromtimestamp(int(micros) / 1e6, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def query(sql):
    cols, rows = query_rows(sql)
    widths = [max([len(c)] + [len(str(r[i])) for r in rows]) for i, c in enumerate(cols)]
    line = lambda vals: "  " + " | ".join(str(v).ljust(w) for v, w in zip(vals, widths))
    print(line(cols))
    print("  " + "-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(["NULL" if v is None else v for v in r]))
    print(f"  ({len(rows)} rows)")


def columns(ref):
    project, dataset, table = ref.split(".")
    t = http("GET", f"{bq_base()}/projects/{project}/datasets/{dataset}/tables/{table}")
    names = [f["name"] for f in t.get("schema", {}).get("fields", [])]
    if not names:
        # bqemulator returns no schema for views: ask the view itself.
        names, _ = query_rows(f"SELECT * FROM `{ref}` LIMIT 0")
    print(f"  {ref}: {', '.join(names)}")


def grant_reader(ref, email):
    project, dataset = ref.split(".")
    url = f"{bq_base()}/projects/{project}/datasets/{dataset}"
    access = http("GET", url).get("access", [])
    access.append({"role": "READER", "userByEmail": email})
    http("PATCH", url, body={"access": access})
    print(f"granted READER on {ref} to {email} directly through the BigQuery API")


def upload_fx(day, rates, complete=True):
    """One daily set of exchange rates under fx/<day>/, with the _SUCCESS marker when complete."""
    ensure_bucket()
    rows = [{"currency": c, "usd_rate": r} for c, r in rates]
    put_object(f"fx/{day}/rates.json", ndjson(rows))
    if complete:
        put_object(f"fx/{day}/_SUCCESS", b"")
    print(f"uploaded the fx set of {day} ({len(rows)} rates{'' if complete else ', no _SUCCESS yet'})")


def identity_base():
    return os.environ["CLOUD_IDENTITY_EMULATOR_HOST"].rstrip("/")


def group_create(email, members):
    """Creates a group in the Cloud Identity stand-in (bqsteward manages members, not groups) and
    adds members directly, as someone would by hand."""
    http("POST", f"{identity_base()}/v1/groups", body={"groupKey": {"id": email}, "parent": "customers/demo"})
    name = http("GET", f"{identity_base()}/v1/groups:lookup?groupKey.id={urllib.parse.quote(email)}")["name"]
    for m in members:
        http("POST", f"{identity_base()}/v1/{name}/memberships",
             body={"preferredMemberKey": {"id": m}, "roles": [{"name": "MEMBER"}]})
    print(f"group {email} created in the Cloud Identity stand-in with {', '.join(members)} added by hand")


def group_members(email):
    name = http("GET", f"{identity_base()}/v1/groups:lookup?groupKey.id={urllib.parse.quote(email)}")["name"]
    ms = http("GET", f"{identity_base()}/v1/{name}/memberships?view=FULL").get("memberships", [])
    for m in sorted(ms, key=lambda m: m["preferredMemberKey"]["id"]):
        roles = sorted(r["name"] for r in m.get("roles", []))
        print(f"  {m['preferredMemberKey']['id']:<20} {' '.join(roles)}")


def iam_bindings(project):
    base = os.environ["RESOURCE_MANAGER_EMULATOR_HOST"].rstrip("/")
    policy = http("POST", f"{base}/v3/projects/{project}:getIamPolicy", body={})
    for b in policy.get("bindings", []):
        print(f"  {b['role']:<28} {', '.join(sorted(b.get('members', [])))}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("upload")
    u.add_argument("--phase", type=int, choices=[1, 2], required=True)
    q = sub.add_parser("query")
    q.add_argument("sql")
    c = sub.add_parser("columns")
    c.add_argument("table")
    g = sub.add_parser("grant-reader")
    g.add_argument("dataset")
    g.add_argument("email")
    fx = sub.add_parser("upload-fx")
    fx.add_argument("day")
    fx.add_argument("--incomplete", action="store_true")
    gc = sub.add_parser("group-create")
    gc.add_argument("email")
    gc.add_argument("members", nargs="*")
    gm = sub.add_parser("group-members")
    gm.add_argument("email")
    ib = sub.add_parser("iam")
    ib.add_argument("project")
    a = p.parse_args()
    if a.cmd == "upload-fx":
        rates = {"2026-11-21": [("EUR", 1.05), ("GBP", 1.26), ("JPY", 0.0066)],
                 "2026-11-22": [("EUR", 1.04), ("GBP", 1.25), ("JPY", 0.0067), ("CHF", 1.13)],
                 "2026-11-23": [("EUR", 9.99)]}[a.day]
        upload_fx(a.day, rates, complete=not a.incomplete)
    elif a.cmd == "group-create":
        group_create(a.email, a.members)
    elif a.cmd == "group-members":
        group_members(a.email)
    elif a.cmd == "iam":
        iam_bindings(a.project)
    elif a.cmd == "upload":
        upload(a.phase)
    elif a.cmd == "query":
        query(a.sql)
    elif a.cmd == "columns":
        columns(a.table)
    else:
        grant_reader(a.dataset, a.email)


if __name__ == "__main__":
    main()
