//! Golden vectors written by the pinned JS compact-encoding (tests/node/gen-golden-encoding.js):
//! Rust must encode every value to the same bytes and decode the bytes back to the value.

use std::net::SocketAddr;

use intercom_encoding::{js_json, Reader, Writer};
use serde_json::Value;

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/golden/compact-encoding.json"
    );
    let text =
        std::fs::read_to_string(path).expect("golden file (run tests/node/gen-golden-encoding.js)");
    serde_json::from_str(&text).expect("golden json")
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn addr(v: &Value) -> SocketAddr {
    let host = v["host"].as_str().unwrap();
    let port = v["port"].as_u64().unwrap() as u16;
    let ip: std::net::IpAddr = host.parse().unwrap();
    SocketAddr::new(ip, port)
}

/// Encodes `value` as `ty` the Rust way.
fn encode(ty: &str, value: &Value) -> Vec<u8> {
    let mut w = Writer::new();
    let u = || value.as_u64().unwrap();
    let i = || value.as_i64().unwrap();
    let f = || value.as_f64().unwrap();
    match ty {
        "uint" => w.uint(u()),
        "uint8" => w.uint8(u() as u8),
        "uint16" => w.uint16(u() as u16),
        "uint24" => w.uint24(u() as u32),
        "uint32" => w.uint32(u() as u32),
        "uint32be" => w.uint32be(u() as u32),
        "uint64" => w.uint64(u()),
        "int" => w.int(i()),
        "int8" => w.int8(i() as i8),
        "int16" => w.int16(i() as i16),
        "int32" => w.int32(i() as i32),
        "float32" => w.float32(f() as f32),
        "float64" => w.float64(f()),
        "bool" => w.bool(value.as_bool().unwrap()),
        "buffer" => w.buffer(&unhex(value)),
        "optionalBuffer" => match value {
            Value::Null => w.optional_buffer(None),
            v => w.optional_buffer(Some(&unhex(v))),
        },
        "raw" => w.raw(&unhex(value)),
        "fixed32" | "fixed64" => w.fixed(&unhex(value)),
        "string" => w.string(value.as_str().unwrap()),
        "json" => w.json(value),
        "array_uint" => w.array(value.as_array().unwrap(), |w, v| {
            w.uint(v.as_u64().unwrap());
        }),
        "array_string" => w.array(value.as_array().unwrap(), |w, v| {
            w.string(v.as_str().unwrap());
        }),
        "array_buffer" => w.array(value.as_array().unwrap(), |w, v| {
            w.buffer(&unhex(v));
        }),
        "ipv4Address" | "ipv6Address" | "ipAddress" => match (ty, addr(value)) {
            ("ipv4Address", SocketAddr::V4(a)) => w.ipv4_address(&a),
            ("ipv6Address", SocketAddr::V6(a)) => w.ipv6_address(&a),
            (_, a) => w.ip_address(&a),
        },
        other => panic!("unknown golden type {other}"),
    };
    w.into_vec()
}

/// Decodes `bytes` as `ty` and returns it in the golden file's JSON shape.
fn decode(ty: &str, bytes: &[u8]) -> Result<Value, intercom_encoding::DecodeError> {
    let mut r = Reader::new(bytes);
    let hexv = |b: &[u8]| Value::from(hex::encode(b));
    let v = match ty {
        "uint" => Value::from(r.uint()?),
        "uint8" => Value::from(r.uint8()?),
        "uint16" => Value::from(r.uint16()?),
        "uint24" => Value::from(r.uint24()?),
        "uint32" => Value::from(r.uint32()?),
        "uint32be" => Value::from(r.uint32be()?),
        "uint64" => Value::from(r.uint64()?),
        "int" => Value::from(r.int()?),
        "int8" => Value::from(r.int8()?),
        "int16" => Value::from(r.int16()?),
        "int32" => Value::from(r.int32()?),
        "float32" => Value::from(f64::from(r.float32()?)),
        "float64" => Value::from(r.float64()?),
        "bool" => Value::from(r.bool()?),
        "buffer" => hexv(r.buffer()?),
        "optionalBuffer" => r.optional_buffer()?.map_or(Value::Null, hexv),
        "raw" => hexv(r.rest()),
        "fixed32" => hexv(&r.fixed32()?),
        "fixed64" => hexv(&r.fixed64()?),
        "string" => Value::from(r.string()?),
        "json" => r.json()?,
        "array_uint" => Value::from(r.array(|r| r.uint())?),
        "array_string" => Value::from(r.array(|r| r.string().map(str::to_owned))?),
        "array_buffer" => Value::from(r.array(|r| r.buffer().map(hex::encode))?),
        "ipv4Address" => {
            let a = r.ipv4_address()?;
            serde_json::json!({"host": a.ip().to_string(), "port": a.port()})
        }
        "ipv6Address" => {
            let a = r.ipv6_address()?;
            serde_json::json!({"host": a.ip().to_string(), "port": a.port()})
        }
        "ipAddress" => {
            let a = r.ip_address()?;
            serde_json::json!({"host": a.ip().to_string(), "port": a.port()})
        }
        other => panic!("unknown golden type {other}"),
    };
    r.finish()?;
    Ok(v)
}

fn same_value(ty: &str, want: &Value, got: &Value) -> bool {
    match ty {
        // JSON text round trip is compared as text: JS and serde agree on the value model.
        "json" => js_json::to_string(want) == js_json::to_string(got),
        "float32" | "float64" | "int" | "int8" | "int16" | "int32" => want.as_f64() == got.as_f64(),
        "ipv4Address" | "ipv6Address" | "ipAddress" => addr(want) == addr(got),
        _ => want == got,
    }
}

#[test]
fn rust_encodes_every_js_vector_identically() {
    let g = golden();
    let vectors = g["vectors"].as_array().unwrap();
    assert!(vectors.len() > 100);
    for v in vectors {
        let ty = v["type"].as_str().unwrap();
        let want = unhex(&v["hex"]);
        assert_eq!(
            hex::encode(encode(ty, &v["value"])),
            hex::encode(&want),
            "encode {ty} {}",
            v["value"]
        );
    }
}

#[test]
fn rust_decodes_every_js_vector_to_the_same_value() {
    let g = golden();
    for v in g["vectors"].as_array().unwrap() {
        let ty = v["type"].as_str().unwrap();
        let got = decode(ty, &unhex(&v["hex"])).unwrap_or_else(|e| panic!("decode {ty}: {e}"));
        assert!(
            same_value(ty, &v["value"], &got),
            "decode {ty}: want {} got {got}",
            v["value"]
        );
    }
}

#[test]
fn rust_rejects_what_js_rejects() {
    let g = golden();
    let invalid = g["invalid"].as_array().unwrap();
    assert!(!invalid.is_empty());
    for v in invalid {
        let ty = v["type"].as_str().unwrap();
        let bytes = unhex(&v["hex"]);
        assert!(
            decode(ty, &bytes).is_err(),
            "{ty} {} should fail",
            hex::encode(&bytes)
        );
    }
}

#[test]
fn every_prefix_of_every_vector_is_an_error_not_a_panic() {
    let g = golden();
    for v in g["vectors"].as_array().unwrap() {
        let ty = v["type"].as_str().unwrap();
        if ty == "raw" {
            continue; // raw takes whatever is there
        }
        let bytes = unhex(&v["hex"]);
        for cut in 0..bytes.len() {
            if ty == "json" || ty.starts_with("array") {
                let _ = decode(ty, &bytes[..cut]);
            } else {
                assert!(decode(ty, &bytes[..cut]).is_err(), "{ty} cut at {cut}");
            }
        }
    }
}
