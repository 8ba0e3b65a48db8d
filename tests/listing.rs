//! Listing proportional to what is new (`source.ordering: Lexical`), against bqemulator and
//! fake-gcs-server through the production clients and the engine's table phase: after the first
//! full listing each cycle lists from the cursor (Cloud Storage's `startOffset`, which
//! fake-gcs-server honours) and reads the ledger from it; a file whose name sorts before the cursor
//! waits for the next full listing, which loads it once. A counting wrapper around the real client
//! reports the objects each cycle's listing returned.

mod support;

use async_trait::async_trait;
use bqsteward::cloud::CloudError;
use bqsteward::cloud::bigquery::{BigQuery, BigQueryRest};
use bqsteward::cloud::storage::{GcsRest, ObjectInfo, Storage};
use bqsteward::engine::{Clients, tables};
use bqsteward::ingest::exec::Target;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::{emulators, unique};

const PROJECT: &str = "bqsteward-test";

/// The real client, counting list calls and the objects they returned.
struct Counting {
    inner: GcsRest,
    calls: AtomicUsize,
    objects: AtomicUsize,
}

impl Counting {
    fn take(&self) -> (usize, usize) {
        (
            self.calls.swap(0, Ordering::SeqCst),
            self.objects.swap(0, Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl Storage for Counting {
    async fn list_each(
        &self,
        bucket: &str,
        prefix: &str,
        sink: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), CloudError> {
        self.list_each_from(bucket, prefix, "", None, sink).await
    }
    async fn list_each_from(
        &self,
        bucket: &str,
        prefix: &str,
        start_offset: &str,
        match_glob: Option<&str>,
        sink: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), CloudError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let objects = &self.objects;
        self.inner
            .list_each_from(bucket, prefix, start_offset, match_glob, &mut |o| {
                objects.fetch_add(1, Ordering::SeqCst);
                sink(o)
            })
            .await
    }
    async fn read_head(
        &self,
        bucket: &str,
        name: &str,
        generation: i64,
        max_bytes: u64,
    ) -> Result<Vec<u8>, CloudError> {
        self.inner.read_head(bucket, name, generation, max_bytes).await
    }
    async fn upload(
        &self,
        bucket: &str,
        name: &str,
        data: Vec<u8>,
        content_type: &str,
    ) -> Result<ObjectInfo, CloudError> {
        self.inner.upload(bucket, name, data, content_type).await
    }
    async fn create(
        &self,
        bucket: &str,
        name: &str,
        data: Vec<u8>,
        content_type: &str,
    ) -> Result<ObjectInfo, CloudError> {
        self.inner.create(bucket, name, data, content_type).await
    }
    async fn delete(&self, bucket: &str, name: &str, generation: i64) -> Result<(), CloudError> {
        self.inner.delete(bucket, name, generation).await
    }
    async fn create_bucket(&self, project: &str, bucket: &str) -> Result<(), CloudError> {
        self.inner.create_bucket(project, bucket).await
    }
}

/// One cycle through the engine's table phase: (objects listed, ledger rows read, files loaded).
async fn cycle(c: &Clients<'_>, gcs: &Counting, t: &Target) -> (usize, usize, usize) {
    gcs.take();
    let state = tables::plan(c, t, chrono::Utc::now().timestamp_millis()).await.unwrap();
    let ledger_rows = state.observed.ledger.len();
    let applied = tables::apply(c, t, &state).await;
    let loaded = match applied.loads {
        Some(Ok(r)) => r.files_loaded,
        Some(Err(e)) => panic!("{e}"),
        None => 0,
    };
    (gcs.take().1, ledger_rows, loaded)
}

async fn rows(bq: &BigQueryRest, t: &Target) -> (String, String) {
    let r = bq
        .query(
            PROJECT,
            "US",
            &format!(
                "SELECT CAST(COUNT(*) AS STRING), CAST(COUNT(DISTINCT id) AS STRING) FROM {}",
                t.table.sql()
            ),
            &[],
        )
        .await
        .unwrap();
    (r.rows[0][0].clone().unwrap(), r.rows[0][1].clone().unwrap())
}

#[tokio::test]
async fn a_lexical_source_lists_from_its_cursor_and_a_full_listing_catches_stragglers() {
    let endpoints = emulators();
    let bq = BigQueryRest::new(&endpoints).await.unwrap();
    let gcs = Counting {
        inner: GcsRest::new(&endpoints).unwrap(),
        calls: AtomicUsize::new(0),
        objects: AtomicUsize::new(0),
    };
    let bucket = unique("lexical").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    let put = |i: usize, name: String| {
        let (gcs, bucket) = (&gcs, &bucket);
        async move { support::upload_id_row(gcs, bucket, &name, i).await }
    };
    let name = |i: usize| format!("in/2026/11/27/f-{i:04}.json");
    for i in 0..30 {
        put(i, name(i)).await;
    }
    let spec = serde_yaml::from_str(&format!(
        "source: {{uri: 'gs://{bucket}/in/', format: NEWLINE_DELIMITED_JSON, include: '**/*.json', ordering: Lexical, \
         lateArrival: 0s, fullListingEvery: 1h}}\n\
         destination: {{project: {PROJECT}, dataset: {}, table: t}}\n\
         schema:\n- {{name: id, type: INT64}}\n",
        unique("lexical")
    ))
    .unwrap();
    let mut t = Target::new("ns/lexical", &spec, None).unwrap();
    let parts = support::EngineParts::new();
    let c = parts.clients(&bq, &gcs);

    // First cycle: no cursor yet, the whole prefix is listed and loaded.
    assert_eq!(cycle(&c, &gcs, &t).await, (30, 0, 30));
    // Second: listed from the cursor recorded at the first (the first file: nothing was settled
    // then), nothing new; the cursor moves to the last loaded name.
    let (listed, _, loaded) = cycle(&c, &gcs, &t).await;
    assert_eq!((listed, loaded), (30, 0));

    // Five new files: the cycle lists the last loaded name and the five, reads one ledger row.
    for i in 30..35 {
        put(i, name(i)).await;
    }
    assert_eq!(cycle(&c, &gcs, &t).await, (6, 1, 5));
    assert_eq!(cycle(&c, &gcs, &t).await.2, 0);

    // A straggler sorting before the cursor waits for the full listing, which loads it once.
    put(99, "in/2026/11/27/f-0005b.json".into()).await;
    let (listed, _, loaded) = cycle(&c, &gcs, &t).await;
    assert!(listed <= 6 && loaded == 0, "listed {listed}, loaded {loaded}");
    assert_eq!(rows(&bq, &t).await, ("35".into(), "35".into()));
    t.listing.force_full = true;
    assert_eq!(cycle(&c, &gcs, &t).await, (36, 35, 1));
    t.listing.force_full = false;
    assert_eq!(cycle(&c, &gcs, &t).await.2, 0);
    assert_eq!(rows(&bq, &t).await, ("36".into(), "36".into()));

    // A new value of the annotation asks for a full listing too.
    t.listing.token = "2026-11-27".into();
    assert_eq!(cycle(&c, &gcs, &t).await.0, 36);
    assert!(cycle(&c, &gcs, &t).await.0 < 36, "then from the cursor again");
}

/// The cursor and `source.include` reach Cloud Storage as `startOffset` and `matchGlob` (through a
/// proxy that records the requests: fake-gcs-server ignores `matchGlob`, so only the request can
/// show it is sent; the same filter runs in bqsteward, which the listing test above relies on).
#[tokio::test]
async fn the_cursor_and_the_include_glob_are_sent_to_cloud_storage() {
    let endpoints = emulators();
    let proxy = support::proxy::Proxy::start(&endpoints.storage).await;
    let gcs = GcsRest::new(&bqsteward::cloud::Endpoints::from_vars(
        Some(endpoints.bigquery.trim_end_matches("/bigquery/v2").to_string()),
        Some(proxy.url.clone()),
    ))
    .unwrap();
    let bucket = unique("glob").replace('_', "-");
    gcs.create_bucket(PROJECT, &bucket).await.unwrap();
    for name in ["in/a/1.json", "in/a/2.json", "in/a/3.csv"] {
        gcs.upload(&bucket, name, b"{}\n".to_vec(), "application/json")
            .await
            .unwrap();
    }
    let spec: bqsteward::crd::ingested_table::IngestedTableSpec = serde_yaml::from_str(&format!(
        "source: {{uri: 'gs://{bucket}/in/', format: NEWLINE_DELIMITED_JSON, include: '**/*.json', ordering: Lexical}}\n\
         destination: {{project: {PROJECT}, dataset: d, table: t}}\nschema:\n- {{name: id, type: INT64}}\n"
    ))
    .unwrap();
    let t = Target::new("ns/glob", &spec, None).unwrap();
    let found = t
        .discovery
        .discover_from(&gcs, Some("in/a/2.json"), true)
        .await
        .unwrap();
    let names: Vec<&str> = found.iter().map(|f| f.uri.rsplit('/').next().unwrap()).collect();
    assert_eq!(names, ["2.json"], "from the cursor, .json only");
    let list = proxy
        .seen()
        .into_iter()
        .find(|s| s.method == "GET" && s.path.contains("/o?"))
        .expect("a list request");
    assert!(list.path.contains("startOffset=in%2Fa%2F2.json"), "{}", list.path);
    assert!(list.path.contains("matchGlob=in%2F**%2F*.json"), "{}", list.path);
}
