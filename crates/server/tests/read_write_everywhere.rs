//! Writes through every node (followers forward to the leader) and reads every write back
//! from every node, at each consistency level.

mod common;

use vexil_proto::v1::{Consistency, CreateFlagRequest, GetFlagRequest, ListFlagsRequest, ReadOptions, WriteOptions};
use vexil_testkit::spec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_every_node_are_read_back_from_every_node() {
    let cluster = common::start(3).await;
    let mut written = Vec::new();
    for writer in 1..=3u64 {
        let mut client = cluster.flags(writer).await;
        for j in 0..10 {
            let key = format!("via-{writer}-{j}");
            let resp = client
                .create_flag(CreateFlagRequest {
                    namespace: "checkout".into(),
                    key: key.clone(),
                    spec_json: spec(&key),
                    options: Some(WriteOptions { request_id: format!("req-{key}"), reason: "test".into() }),
                    strict: false,
                })
                .await
                .unwrap_or_else(|e| panic!("create {key} through node {writer}: {e}"))
                .into_inner();
            let header = resp.header.expect("write header");
            assert_eq!(resp.version, 1);
            written.push((key, header.revision));
        }
    }
    let max_revision = written.iter().map(|(_, r)| *r).max().expect("writes");

    for reader in 1..=3u64 {
        let mut client = cluster.flags(reader).await;
        for (key, revision) in &written {
            // Default (lease) and explicit linearizable reads must see every acknowledged write.
            for consistency in [Consistency::Unspecified, Consistency::Linearizable] {
                let got = client
                    .get_flag(GetFlagRequest {
                        namespace: "checkout".into(),
                        key: key.clone(),
                        read: Some(ReadOptions { consistency: consistency as i32, min_revision: 0 }),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("get {key} from node {reader}: {e}"))
                    .into_inner();
                let header = got.header.expect("read header");
                assert_eq!(header.node_id, reader);
                assert!(header.revision >= *revision, "read at {} misses write at {revision}", header.revision);
                let flag = got.flag.expect("flag");
                assert!(flag.spec_json.contains(key.as_str()), "{}", flag.spec_json);
                assert_eq!(flag.created_revision, *revision);
            }
        }
        // A stale read with min_revision waits for the writes to arrive: read-your-writes.
        let list = client
            .list_flags(ListFlagsRequest {
                namespace: "checkout".into(),
                limit: 1000,
                read: Some(ReadOptions { consistency: Consistency::Stale as i32, min_revision: max_revision }),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        let header = list.header.expect("header");
        assert_eq!(header.consistency, Consistency::Stale as i32);
        assert!(header.revision >= max_revision);
        assert_eq!(list.flags.len(), written.len(), "node {reader} lists every flag");
    }
}
