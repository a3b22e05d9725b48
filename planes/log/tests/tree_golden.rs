//! The Merkle tree against JS hypercore 11.37.1 (tests/golden/hypercore-tree.json, from
//! tests/node/gen-golden-hypercore-tree.js): the same roots, tree hashes and signatures
//! after every append, the same proofs for the same requests, and JS proofs verify.

use std::collections::HashMap;

use intercom_crypto::KeyPair;
use intercom_log::tree::{
    generate_proof, verify_proof, IndexedProof, Node, NodeSource, Proof, ProofRequest, TreeHead,
    UpgradeProof,
};
use intercom_log::{caps, flat, LogError};
use serde_json::{json, Value};

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/golden/hypercore-tree.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json")
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

fn arr32(v: &Value) -> [u8; 32] {
    unhex(v).try_into().expect("32 bytes")
}

fn node_json(n: &Node) -> Value {
    json!({ "index": n.index, "size": n.size, "hash": hex::encode(n.hash) })
}

fn node_from(v: &Value) -> Node {
    Node {
        index: v["index"].as_u64().expect("index"),
        size: v["size"].as_u64().expect("size"),
        hash: arr32(&v["hash"]),
    }
}

fn nodes_from(v: &Value) -> Vec<Node> {
    v.as_array().expect("nodes").iter().map(node_from).collect()
}

#[derive(Default, Clone)]
struct Nodes(HashMap<u64, Node>);

impl NodeSource for Nodes {
    fn node(&self, index: u64) -> Result<Option<Node>, LogError> {
        Ok(self.0.get(&index).copied())
    }
}

fn sign(key: &[u8; 32], kp: &KeyPair, head: &TreeHead) -> Vec<u8> {
    let signable = caps::tree_signable(key, &head.hash(), head.length, head.fork);
    // Manifest-v1 single signer: a multisig with one proof (signer 0, no patch).
    let mut out = vec![1, 0];
    out.extend_from_slice(&kp.sign(&signable));
    out.extend_from_slice(&[0, 0]);
    out
}

/// Builds the log of the golden file, returning the head after each append and all nodes.
fn build(g: &Value, kp: &KeyPair, key: &[u8; 32]) -> (Vec<TreeHead>, Nodes) {
    let mut head = TreeHead::default();
    let mut nodes = Nodes::default();
    let mut heads = Vec::new();
    for e in g["entries"].as_array().expect("entries") {
        for n in head.append(&unhex(e)) {
            nodes.0.insert(n.index, n);
        }
        head.signature = sign(key, kp, &head);
        heads.push(head.clone());
    }
    (heads, nodes)
}

fn proof_json(p: &Proof, value: Option<&[u8]>) -> Value {
    let nodes = |ns: &[Node]| Value::Array(ns.iter().map(node_json).collect());
    json!({
        "fork": p.fork,
        "block": p.block.as_ref().map(|b| json!({
            "index": b.index, "value": value.map(hex::encode), "nodes": nodes(&b.nodes)
        })),
        "hash": p.hash.as_ref().map(|h| json!({ "index": h.index, "nodes": nodes(&h.nodes) })),
        "upgrade": p.upgrade.as_ref().map(|u| json!({
            "start": u.start, "length": u.length, "nodes": nodes(&u.nodes),
            "additionalNodes": nodes(&u.additional_nodes),
            "signature": hex::encode(&u.signature)
        })),
    })
}

fn proof_from(v: &Value) -> (Proof, Option<Vec<u8>>) {
    let indexed = |x: &Value| IndexedProof {
        index: x["index"].as_u64().expect("index"),
        nodes: nodes_from(&x["nodes"]),
    };
    let proof = Proof {
        fork: v["fork"].as_u64().expect("fork"),
        block: (!v["block"].is_null()).then(|| indexed(&v["block"])),
        hash: (!v["hash"].is_null()).then(|| indexed(&v["hash"])),
        upgrade: (!v["upgrade"].is_null()).then(|| {
            let u = &v["upgrade"];
            UpgradeProof {
                start: u["start"].as_u64().expect("start"),
                length: u["length"].as_u64().expect("length"),
                nodes: nodes_from(&u["nodes"]),
                additional_nodes: nodes_from(&u["additionalNodes"]),
                signature: unhex(&u["signature"]),
            }
        }),
    };
    let value = (!v["block"].is_null()).then(|| unhex(&v["block"]["value"]));
    (proof, value)
}

fn request_from(v: &Value) -> ProofRequest {
    let pair = |x: &Value, a: &str, b: &str| {
        (!x.is_null()).then(|| (x[a].as_u64().expect("field"), x[b].as_u64().expect("field")))
    };
    ProofRequest {
        block: pair(&v["block"], "index", "nodes"),
        hash: pair(&v["hash"], "index", "nodes"),
        upgrade: pair(&v["upgrade"], "start", "length"),
    }
}

fn setup() -> (Value, KeyPair, [u8; 32], Vec<TreeHead>, Nodes) {
    let g = golden();
    let kp = KeyPair::from_seed(&arr32(&g["seed"]));
    assert_eq!(hex::encode(kp.public_key), g["publicKey"].as_str().unwrap());
    let key = arr32(&g["key"]);
    let (heads, nodes) = build(&g, &kp, &key);
    (g, kp, key, heads, nodes)
}

#[test]
fn keys_match_js() {
    let g = golden();
    let key = arr32(&g["key"]);
    assert_eq!(caps::manifest_hash(&unhex(&g["manifest"])), key);
    assert_eq!(
        hex::encode(caps::discovery_key(&key)),
        g["discoveryKey"].as_str().unwrap()
    );
}

#[test]
fn heads_match_js_after_every_append() {
    let (g, _, _, heads, _) = setup();
    for (head, js) in heads.iter().zip(g["heads"].as_array().unwrap()) {
        assert_eq!(head.length, js["length"].as_u64().unwrap());
        assert_eq!(head.byte_length, js["byteLength"].as_u64().unwrap());
        assert_eq!(hex::encode(head.hash()), js["treeHash"].as_str().unwrap());
        let roots: Vec<Value> = head.roots.iter().map(node_json).collect();
        assert_eq!(
            Value::Array(roots),
            js["roots"],
            "roots at length {}",
            head.length
        );
        assert_eq!(
            hex::encode(&head.signature),
            js["signature"].as_str().unwrap()
        );
    }
}

#[test]
fn proofs_match_js() {
    let (g, _, _, heads, nodes) = setup();
    let head = heads.last().unwrap();
    let entries = g["entries"].as_array().unwrap();
    for case in g["proofs"].as_array().unwrap() {
        let req = request_from(&case["request"]);
        let got = generate_proof(head, &nodes, &req);
        if case.get("error").is_some() {
            assert!(got.is_err(), "JS refused {req:?}, we answered {got:?}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{req:?}: {e}"));
        let value = got
            .block
            .as_ref()
            .map(|b| unhex(&entries[b.index as usize]));
        assert_eq!(
            proof_json(&got, value.as_deref()),
            case["proof"],
            "request {req:?}"
        );
    }
}

/// The nodes a peer that verified the log up to `length` holds: every node whose span
/// ends before the block at `length`.
fn known_up_to(all: &Nodes, length: u64) -> Nodes {
    Nodes(
        all.0
            .iter()
            .filter(|(i, _)| length > 0 && flat::right_span(**i) < 2 * length)
            .map(|(i, n)| (*i, *n))
            .collect(),
    )
}

#[test]
fn js_proofs_verify_and_tampering_is_caught() {
    let (g, _, key, heads, all) = setup();
    let kp_public = arr32(&g["publicKey"]);
    for case in g["proofs"].as_array().unwrap() {
        if case.get("error").is_some() {
            continue;
        }
        if case["request"]["block"]["nodes"] == 3 && case["request"]["upgrade"]["start"] == 13 {
            // Climbs past what a peer at length 13 holds: JS answers it, nobody can check it.
            continue;
        }
        let (proof, value) = proof_from(&case["proof"]);
        let (trusted, known) = match &proof.upgrade {
            Some(u) if u.start > 0 => (
                heads[u.start as usize - 1].clone(),
                known_up_to(&all, u.start),
            ),
            Some(_) => (TreeHead::default(), Nodes::default()),
            None => (heads.last().unwrap().clone(), all.clone()),
        };
        let verified = verify_proof(&trusted, &known, &proof, value.as_deref())
            .unwrap_or_else(|e| panic!("{}: {e}", case["request"]));
        if proof.upgrade.is_some() {
            let head = &verified.head;
            assert_eq!(
                head,
                heads.last().unwrap(),
                "upgrade of {}",
                case["request"]
            );
            let signable = caps::tree_signable(&key, &head.hash(), head.length, head.fork);
            assert!(intercom_crypto::verify(
                &head.signature[2..66],
                &signable,
                &kp_public
            ));
        }
        // Flip one byte of the value or of an upgrade node: the proof must fail, or
        // (where only the signature binds it) lead to a head the signature does not cover.
        let expected = heads.last().unwrap().hash();
        let rejected = |p: &Proof, v: Option<&[u8]>| match verify_proof(&trusted, &known, p, v) {
            Err(_) => true,
            Ok(v) => v.upgraded && v.head.hash() != expected,
        };
        if let Some(v) = &value {
            let mut bad = v.clone();
            bad[0] ^= 1;
            assert!(
                rejected(&proof, Some(&bad)),
                "tampered value of {}",
                case["request"]
            );
        }
        if proof.upgrade.as_ref().is_some_and(|u| !u.nodes.is_empty()) {
            let mut bad = proof.clone();
            bad.upgrade.as_mut().unwrap().nodes[0].hash[0] ^= 1;
            assert!(
                rejected(&bad, value.as_deref()),
                "tampered node of {}",
                case["request"]
            );
        }
    }
}
