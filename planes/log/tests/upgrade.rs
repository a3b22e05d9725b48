//! Logs stored before blocks became blob records (header version 1: plain block values)
//! are rewritten when opened, and read back unchanged.

use std::sync::Arc;

use intercom_crypto::KeyPair;
use intercom_log::{block_key, Log};
use intercom_stores::{Batch, Durability, KvStore, RocksStore};

fn header_key(log: &Log) -> Vec<u8> {
    let mut k = block_key(log.discovery_key(), 0);
    k.truncate(k.len() - 9);
    k.push(b'h');
    k
}

#[test]
fn a_version_1_log_is_upgraded_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    // Every value starts with 0, the tag of an inline blob record: read without the
    // upgrade, each would come back one byte short.
    let entries: Vec<Vec<u8>> = (0..40u8)
        .map(|i| {
            let mut v = vec![0u8; if i % 2 == 0 { 3000 } else { 10 }];
            v[1] = i;
            v
        })
        .collect();
    let keypair = KeyPair::from_seed(&[8; 32]);
    {
        let kv = Arc::new(RocksStore::open(dir.path(), Durability::Process).unwrap());
        let mut log = Log::open_writer(kv.clone(), keypair.clone()).unwrap();
        log.append(&entries).unwrap();
        // Store it the way version 1 did: plain values, header version 1.
        let plain: Vec<(Vec<u8>, Vec<u8>)> = (0..entries.len() as u64)
            .map(|b| {
                let k = block_key(log.discovery_key(), b);
                let v = kv.get_blob(&k).unwrap().unwrap();
                (k, v)
            })
            .collect();
        let mut header = kv.get(&header_key(&log)).unwrap().unwrap();
        assert_eq!(header[0], 2, "current header version");
        header[0] = 1;
        let mut batch = Batch::default();
        for (k, v) in &plain {
            batch.put(k, v);
        }
        batch.put(&header_key(&log), &header);
        kv.write(batch, true).unwrap();
    }

    let kv = Arc::new(RocksStore::open(dir.path(), Durability::Process).unwrap());
    let log = Log::open_writer(kv.clone(), keypair).unwrap();
    assert_eq!(log.length(), entries.len() as u64);
    for (b, entry) in entries.iter().enumerate() {
        assert_eq!(
            log.get(b as u64).unwrap().as_ref(),
            Some(entry),
            "block {b}"
        );
    }
    assert_eq!(log.verify_all().unwrap(), entries.len() as u64);
    let header = kv.get(&header_key(&log)).unwrap().unwrap();
    assert_eq!(header[0], 2, "header rewritten as version 2");
    // The large blocks moved to the blob file: what RocksDB holds is a short reference.
    let stored = kv.get(&block_key(log.discovery_key(), 0)).unwrap().unwrap();
    assert!(stored.len() < 100, "{} bytes in RocksDB", stored.len());
    // Opening again reads the upgraded log as it is.
    let key = *log.key();
    drop(log);
    let log = Log::open(kv, key).unwrap();
    for (b, entry) in entries.iter().enumerate() {
        assert_eq!(
            log.get(b as u64).unwrap().as_ref(),
            Some(entry),
            "block {b}"
        );
    }
}
