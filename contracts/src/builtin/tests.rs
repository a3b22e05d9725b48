//! Unit tests of the built-in contract: permissions, state effects, features, reads,
//! command mapping, and that every rejection leaves the state as it was.

use super::*;
use crate::MemoryState;

const ADMIN: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const MOD: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const ALICE: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const BOB: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

fn ctx(author: &str) -> Context<'_> {
    Context {
        author,
        writer: author,
        position: 7,
        timestamp: 1_700_000_000_000,
        admin: Some(ADMIN),
    }
}

/// Applies `name`/`value` as `author`; on rejection, asserts the state is unchanged.
fn try_apply(
    state: &mut MemoryState,
    author: &str,
    name: &str,
    value: Value,
) -> Result<(), ContractError> {
    try_apply_ctx(state, &ctx(author), name, value)
}

fn try_apply_ctx(
    state: &mut MemoryState,
    ctx: &Context<'_>,
    name: &str,
    value: Value,
) -> Result<(), ContractError> {
    let before = state.clone();
    let result = BuiltinContract.apply(&Operation::new(name, value), ctx, state);
    if result.is_err() {
        assert_eq!(*state, before, "rejected `{name}` changed the state");
    }
    result
}

#[track_caller]
fn ok(state: &mut MemoryState, author: &str, name: &str, value: Value) {
    if let Err(e) = try_apply(state, author, name, value) {
        panic!("`{name}` by {} failed: {e}", &author[..4]);
    }
}

#[track_caller]
fn fails(state: &mut MemoryState, author: &str, name: &str, value: Value) -> ContractError {
    match try_apply(state, author, name, value) {
        Ok(()) => panic!("`{name}` by {} was accepted", &author[..4]),
        Err(e) => e,
    }
}

fn get(state: &MemoryState, key: &str) -> Value {
    state.get(key).unwrap_or(Value::Null)
}

/// A state with the chat on and MOD a moderator.
fn chat() -> MemoryState {
    let mut s = MemoryState::new();
    ok(&mut s, ADMIN, "set_chat_status", json!({"enabled": true}));
    ok(&mut s, ADMIN, "set_mod", json!({"user": MOD, "mod": true}));
    s
}

fn post(s: &mut MemoryState, author: &str, text: &str) {
    ok(s, author, "post", json!({"message": text}));
}

#[test]
fn store_something_writes_once() {
    let mut s = MemoryState::new();
    ok(&mut s, ALICE, "store_something", Value::Null);
    assert_eq!(get(&s, "something"), json!("there is something"));
    let after_first = s.clone();
    ok(&mut s, BOB, "store_something", json!({}));
    assert_eq!(s, after_first);
}

#[test]
fn submit_something_records_the_author() {
    let mut s = MemoryState::new();
    ok(
        &mut s,
        ALICE,
        "submit_something",
        json!({"some_key": "data"}),
    );
    assert_eq!(get(&s, &format!("submitted_by/{ALICE}")), json!("data"));
    let e = fails(&mut s, ALICE, "submit_something", json!({"some_key": ""}));
    assert_eq!(e.code(), "string_length");
    let e = fails(
        &mut s,
        ALICE,
        "submit_something",
        json!({"some_key": "x", "op": "do_something"}),
    );
    assert_eq!(e.code(), "unknown_field");
}

#[test]
fn app_data_is_owned_by_its_first_writer() {
    let mut s = MemoryState::new();
    ok(
        &mut s,
        ALICE,
        "put",
        json!({"key": "profile", "value": {"age": 3}}),
    );
    assert_eq!(get(&s, "kv/profile"), json!({"age": 3}));
    assert_eq!(get(&s, "kvo/profile"), json!(ALICE));

    ok(
        &mut s,
        ALICE,
        "put",
        json!({"key": "profile", "value": [1]}),
    );
    assert_eq!(get(&s, "kv/profile"), json!([1]));

    let e = fails(&mut s, BOB, "put", json!({"key": "profile", "value": 0}));
    assert_eq!(e.code(), "permission_denied");
    assert!(e.to_string().contains("only its owner or the admin"), "{e}");
    let e = fails(&mut s, BOB, "delete", json!({"key": "profile"}));
    assert_eq!(e.code(), "permission_denied");

    // The admin may overwrite; the owner stays.
    ok(
        &mut s,
        ADMIN,
        "put",
        json!({"key": "profile", "value": "moderated"}),
    );
    assert_eq!(get(&s, "kv/profile"), json!("moderated"));
    assert_eq!(get(&s, "kvo/profile"), json!(ALICE));

    ok(&mut s, ALICE, "delete", json!({"key": "profile"}));
    assert_eq!(s.get("kv/profile"), None);
    assert_eq!(s.get("kvo/profile"), None);
    let e = fails(&mut s, ALICE, "delete", json!({"key": "profile"}));
    assert_eq!(e.code(), "not_found");

    // Deleted keys are free again; the admin may delete anyone's.
    ok(&mut s, BOB, "put", json!({"key": "profile", "value": true}));
    assert_eq!(get(&s, "kvo/profile"), json!(BOB));
    ok(&mut s, ADMIN, "delete", json!({"key": "profile"}));
    assert!(s.entries.is_empty());

    let e = fails(&mut s, BOB, "put", json!({"key": "k", "value": null}));
    assert_eq!(e.code(), "missing_field", "null counts as absent");
    let e = fails(&mut s, BOB, "put", json!({"key": "k"}));
    assert_eq!(e.code(), "missing_field");
}

#[test]
fn chat_status_is_admin_only() {
    let mut s = MemoryState::new();
    let e = fails(&mut s, ALICE, "set_chat_status", json!({"enabled": true}));
    assert_eq!(e.code(), "permission_denied");
    let no_admin = Context {
        admin: None,
        ..ctx(ALICE)
    };
    let e = try_apply_ctx(&mut s, &no_admin, "set_chat_status", json!({"enabled": 1})).unwrap_err();
    assert!(e.to_string().contains("no admin"), "{e}");

    ok(&mut s, ADMIN, "set_chat_status", json!({"enabled": 1}));
    assert_eq!(get(&s, "chat_status"), json!("on"));
    ok(&mut s, ADMIN, "set_chat_status", json!({"enabled": false}));
    assert_eq!(get(&s, "chat_status"), json!("off"));
}

#[test]
fn posts_get_sequential_ids_and_update_chat_last() {
    let mut s = MemoryState::new();
    let e = fails(&mut s, ALICE, "post", json!({"message": "hi"}));
    assert_eq!(e.code(), "rejected");
    assert!(e.to_string().contains("chat is off"), "{e}");

    let mut s = chat();
    post(&mut s, ALICE, "hello");
    assert_eq!(
        get(&s, "msg/0"),
        json!({"id": 0, "msg": "hello", "address": ALICE, "at": null,
               "timestamp": 1_700_000_000_000u64, "reply_to": null, "deleted": false,
               "deleted_by": null, "pinned": false, "pin_id": null})
    );
    assert_eq!(
        get(&s, "chat_last"),
        json!({"msg": "hello", "address": ALICE, "at": null})
    );

    BuiltinContract
        .apply_feature(
            "timer",
            &json!({"key": "currentTime", "value": 42}),
            &ctx(ADMIN),
            &mut s,
        )
        .unwrap();
    ok(&mut s, BOB, "post", json!({"message": "re", "reply_to": 0}));
    assert_eq!(get(&s, "msg/1")["reply_to"], json!(0));
    assert_eq!(get(&s, "msg/1")["at"], json!(42));
    assert_eq!(
        get(&s, "chat_last"),
        json!({"msg": "re", "address": BOB, "at": 42})
    );
    post(&mut s, ALICE, "again");

    assert_eq!(get(&s, "msgl"), json!(3));
    assert_eq!(get(&s, &format!("umsgl/{ALICE}")), json!(2));
    assert_eq!(get(&s, &format!("umsg/{ALICE}/1")), json!("msg/2"));
    assert_eq!(get(&s, &format!("umsg/{BOB}/0")), json!("msg/1"));

    let e = fails(&mut s, BOB, "post", json!({"message": "x", "reply_to": 3}));
    assert_eq!(e.code(), "not_found");
    assert!(e.to_string().contains("message 3"), "{e}");
}

#[test]
fn muted_users_cannot_post_but_the_admin_always_can() {
    let mut s = chat();
    ok(
        &mut s,
        MOD,
        "mute_status",
        json!({"user": ALICE, "muted": true}),
    );
    let e = fails(&mut s, ALICE, "post", json!({"message": "hi"}));
    assert_eq!(e.code(), "permission_denied");
    assert!(e.to_string().contains("muted"), "{e}");
    ok(
        &mut s,
        ADMIN,
        "mute_status",
        json!({"user": ADMIN, "muted": true}),
    );
    post(&mut s, ADMIN, "still here");
    ok(
        &mut s,
        MOD,
        "mute_status",
        json!({"user": ALICE, "muted": false}),
    );
    post(&mut s, ALICE, "back");
}

#[test]
fn whitelist_restricts_posting() {
    let mut s = chat();
    let e = fails(&mut s, MOD, "enable_whitelist", json!({"enabled": true}));
    assert_eq!(e.code(), "permission_denied");
    ok(&mut s, ADMIN, "enable_whitelist", json!({"enabled": true}));
    assert_eq!(get(&s, "wlst"), json!(true));

    let e = fails(&mut s, ALICE, "post", json!({"message": "hi"}));
    assert!(e.to_string().contains("whitelist"), "{e}");
    post(&mut s, ADMIN, "admin is exempt");

    let e = fails(
        &mut s,
        MOD,
        "set_whitelist_status",
        json!({"user": ALICE, "status": true}),
    );
    assert_eq!(e.code(), "permission_denied");
    ok(
        &mut s,
        ADMIN,
        "set_whitelist_status",
        json!({"user": ALICE, "status": true}),
    );
    assert_eq!(get(&s, &format!("wl/{ALICE}")), json!(true));
    post(&mut s, ALICE, "listed");
    ok(
        &mut s,
        ADMIN,
        "set_whitelist_status",
        json!({"user": ALICE, "status": 0}),
    );
    fails(&mut s, ALICE, "post", json!({"message": "unlisted"}));
    ok(&mut s, ADMIN, "enable_whitelist", json!({"enabled": false}));
    post(&mut s, ALICE, "open again");
}

#[test]
fn nicks_are_unique_and_moderated() {
    let mut s = MemoryState::new();
    let e = fails(&mut s, ALICE, "set_nick", json!({"nick": "al"}));
    assert!(e.to_string().contains("chat is off"), "{e}");

    let mut s = chat();
    ok(&mut s, ALICE, "set_nick", json!({"nick": "al"}));
    assert_eq!(get(&s, &format!("nick/{ALICE}")), json!("al"));
    assert_eq!(get(&s, "kcin/al"), json!(ALICE));

    let e = fails(&mut s, BOB, "set_nick", json!({"nick": "al"}));
    assert_eq!(e.code(), "rejected");
    assert!(e.to_string().contains("already taken"), "{e}");

    // Setting your current nick again changes nothing.
    let before = s.clone();
    ok(&mut s, ALICE, "set_nick", json!({"nick": "al"}));
    assert_eq!(s, before);

    // Renaming frees the old nick.
    ok(&mut s, ALICE, "set_nick", json!({"nick": "alice"}));
    assert_eq!(s.get("kcin/al"), None);
    ok(&mut s, BOB, "set_nick", json!({"nick": "al"}));

    // Others' nicks: admin for anyone, mods for regular users only.
    let e = fails(&mut s, BOB, "set_nick", json!({"nick": "x", "user": ALICE}));
    assert_eq!(e.code(), "permission_denied");
    ok(
        &mut s,
        MOD,
        "set_nick",
        json!({"nick": "renamed", "user": ALICE.to_ascii_uppercase()}),
    );
    assert_eq!(get(&s, &format!("nick/{ALICE}")), json!("renamed"));
    assert_eq!(get(&s, "kcin/renamed"), json!(ALICE));
    let e = fails(
        &mut s,
        MOD,
        "set_nick",
        json!({"nick": "boss", "user": ADMIN}),
    );
    assert!(e.to_string().contains("moderators cannot"), "{e}");
    ok(&mut s, ADMIN, "set_mod", json!({"user": BOB, "mod": true}));
    fails(&mut s, MOD, "set_nick", json!({"nick": "m2", "user": BOB}));
    ok(
        &mut s,
        ADMIN,
        "set_nick",
        json!({"nick": "m2", "user": BOB}),
    );
    assert_eq!(s.get("kcin/al"), None);

    let e = fails(&mut s, ALICE, "set_nick", json!({"nick": "x".repeat(33)}));
    assert_eq!(e.code(), "string_length");
}

#[test]
fn mute_rules_follow_trac_peer() {
    let mut s = chat();
    let e = fails(
        &mut s,
        ALICE,
        "mute_status",
        json!({"user": BOB, "muted": true}),
    );
    assert_eq!(e.code(), "permission_denied");
    ok(
        &mut s,
        MOD,
        "mute_status",
        json!({"user": BOB.to_ascii_uppercase(), "muted": 1}),
    );
    assert_eq!(
        get(&s, &format!("mtd/{BOB}")),
        json!(true),
        "keys are lowercased"
    );
    let e = fails(
        &mut s,
        MOD,
        "mute_status",
        json!({"user": ADMIN, "muted": true}),
    );
    assert!(e.to_string().contains("cannot mute the admin"), "{e}");
    let e = fails(
        &mut s,
        MOD,
        "mute_status",
        json!({"user": MOD, "muted": true}),
    );
    assert!(e.to_string().contains("cannot mute moderators"), "{e}");
    ok(
        &mut s,
        ADMIN,
        "mute_status",
        json!({"user": MOD, "muted": true}),
    );
    assert_eq!(get(&s, &format!("mtd/{MOD}")), json!(true));
    fails(&mut s, MOD, "post", json!({"message": "muted mod"}));
}

#[test]
fn set_mod_is_admin_only() {
    let mut s = chat();
    let e = fails(&mut s, MOD, "set_mod", json!({"user": ALICE, "mod": true}));
    assert_eq!(e.code(), "permission_denied");
    ok(
        &mut s,
        ADMIN,
        "set_mod",
        json!({"user": ALICE, "mod": true}),
    );
    assert_eq!(get(&s, &format!("mod/{ALICE}")), json!(true));
    ok(
        &mut s,
        ALICE,
        "mute_status",
        json!({"user": BOB, "muted": true}),
    );
    ok(
        &mut s,
        ADMIN,
        "set_mod",
        json!({"user": ALICE, "mod": false}),
    );
    fails(
        &mut s,
        ALICE,
        "mute_status",
        json!({"user": BOB, "muted": false}),
    );
}

#[test]
fn message_deletion_permissions_and_effects() {
    let mut s = chat();
    post(&mut s, ALICE, "a0");
    post(&mut s, ADMIN, "admin1");
    post(&mut s, BOB, "b2");
    post(&mut s, ALICE, "a3");

    let e = fails(&mut s, BOB, "delete_message", json!({"id": 0}));
    assert_eq!(e.code(), "permission_denied");
    ok(&mut s, ALICE, "delete_message", json!({"id": 0}));
    let m = get(&s, "msg/0");
    assert_eq!(m["msg"], Value::Null);
    assert_eq!(m["deleted"], json!(true));
    assert_eq!(m["deleted_by"], json!(ALICE));
    assert_eq!(get(&s, "delm/0"), json!(0));
    assert_eq!(get(&s, "delml"), json!(1));

    let e = fails(&mut s, ALICE, "delete_message", json!({"id": 0}));
    assert!(e.to_string().contains("already deleted"), "{e}");
    let e = fails(&mut s, MOD, "delete_message", json!({"id": 1}));
    assert!(e.to_string().contains("admin's messages"), "{e}");
    ok(&mut s, MOD, "delete_message", json!({"id": 2}));
    assert_eq!(get(&s, "msg/2")["deleted_by"], json!(MOD));
    ok(&mut s, ADMIN, "delete_message", json!({"id": 1}));
    ok(&mut s, ADMIN, "delete_message", json!({"id": 3}));
    assert_eq!(get(&s, "delml"), json!(4));
    assert_eq!(get(&s, "delm/3"), json!(3));
    let e = fails(&mut s, ADMIN, "delete_message", json!({"id": 9}));
    assert_eq!(e.code(), "not_found");
}

#[test]
fn pins_get_pin_ids() {
    let mut s = chat();
    post(&mut s, ALICE, "m0");
    post(&mut s, ALICE, "m1");

    let e = fails(&mut s, ALICE, "pin_message", json!({"id": 0, "pin": true}));
    assert_eq!(e.code(), "permission_denied");
    let e = fails(&mut s, MOD, "pin_message", json!({"id": 5, "pin": true}));
    assert_eq!(e.code(), "not_found");

    // Unpinning a never-pinned message hands out no pin id.
    ok(&mut s, MOD, "pin_message", json!({"id": 1, "pin": false}));
    assert_eq!(s.get("pnl"), None);

    ok(&mut s, MOD, "pin_message", json!({"id": 1, "pin": true}));
    assert_eq!(get(&s, "pnl"), json!(1));
    assert_eq!(get(&s, "pni/0"), json!({"msg": 1, "pinned": true}));
    assert_eq!(get(&s, "msg/1")["pin_id"], json!(0));
    assert_eq!(get(&s, "msg/1")["pinned"], json!(true));

    // Re-pinning keeps the pin id; pin=false flips it in place.
    ok(&mut s, ADMIN, "pin_message", json!({"id": 1, "pin": true}));
    assert_eq!(get(&s, "pnl"), json!(1));
    ok(&mut s, ADMIN, "pin_message", json!({"id": 1, "pin": false}));
    assert_eq!(get(&s, "pni/0"), json!({"msg": 1, "pinned": false}));
    assert_eq!(get(&s, "msg/1")["pinned"], json!(false));
    assert_eq!(get(&s, "msg/1")["pin_id"], json!(0));

    ok(&mut s, ADMIN, "pin_message", json!({"id": 0, "pin": true}));
    assert_eq!(get(&s, "msg/0")["pin_id"], json!(1));

    let e = fails(&mut s, ALICE, "unpin_message", json!({"pin_id": 1}));
    assert_eq!(e.code(), "permission_denied");
    let e = fails(&mut s, MOD, "unpin_message", json!({"pin_id": 7}));
    assert!(e.to_string().contains("pin 7"), "{e}");
    ok(&mut s, MOD, "unpin_message", json!({"pin_id": 1}));
    assert_eq!(get(&s, "pni/1"), json!({"msg": 0, "pinned": false}));
    assert_eq!(get(&s, "msg/0")["pin_id"], Value::Null);
    assert_eq!(get(&s, "msg/0")["pinned"], json!(false));

    // A new pin after an unpin gets a fresh pin id.
    ok(&mut s, MOD, "pin_message", json!({"id": 0, "pin": true}));
    assert_eq!(get(&s, "msg/0")["pin_id"], json!(2));
}

#[test]
fn timer_feature_entries_are_checked() {
    let c = BuiltinContract;
    assert_eq!(c.features(), ["timer"]);
    let mut s = MemoryState::new();
    c.apply_feature(
        "timer",
        &json!({"key": "currentTime", "value": 1234}),
        &ctx(ADMIN),
        &mut s,
    )
    .unwrap();
    assert_eq!(get(&s, "currentTime"), json!(1234));

    let bad = [
        ("timer", json!(5), "invalid_feature_entry"),
        (
            "timer",
            json!({"key": "currentTime"}),
            "invalid_feature_entry",
        ),
        (
            "timer",
            json!({"key": "currentTime", "value": -1}),
            "invalid_feature_entry",
        ),
        (
            "timer",
            json!({"key": "currentTime", "value": 1.5}),
            "invalid_feature_entry",
        ),
        (
            "timer",
            json!({"key": "currentTime", "value": "1"}),
            "invalid_feature_entry",
        ),
        (
            "timer",
            json!({"key": "currentTime", "value": u64::MAX}),
            "invalid_feature_entry",
        ),
        (
            "timer",
            json!({"key": "other", "value": 1}),
            "invalid_feature_entry",
        ),
        (
            "timer",
            json!({"key": 1, "value": 1}),
            "invalid_feature_entry",
        ),
        (
            "timer",
            json!({"key": "currentTime", "value": 1, "x": 0}),
            "invalid_feature_entry",
        ),
        (
            "clock",
            json!({"key": "currentTime", "value": 1}),
            "unknown_feature",
        ),
    ];
    for (feature, entry, code) in bad {
        let before = s.clone();
        let e = c
            .apply_feature(feature, &entry, &ctx(ADMIN), &mut s)
            .unwrap_err();
        assert_eq!(e.code(), code, "{entry}: {e}");
        assert_eq!(s, before);
    }
    let e = c
        .apply_feature(
            "timer",
            &json!({"key": "other", "value": 1}),
            &ctx(ADMIN),
            &mut s,
        )
        .unwrap_err();
    assert!(e.to_string().contains("\"other\""), "{e}");
}

#[test]
fn reads_return_state() {
    let c = BuiltinContract;
    let mut s = chat();
    for i in 0..25 {
        post(&mut s, ALICE, &format!("m{i}"));
    }
    ok(&mut s, ALICE, "store_something", Value::Null);
    ok(&mut s, ALICE, "set_nick", json!({"nick": "al"}));
    ok(&mut s, ALICE, "put", json!({"key": "k", "value": 5}));
    c.apply_feature(
        "timer",
        &json!({"key": "currentTime", "value": 9}),
        &ctx(ADMIN),
        &mut s,
    )
    .unwrap();

    assert_eq!(
        c.read("read_key", &json!({"key": "kv/k"}), &s).unwrap(),
        json!(5)
    );
    assert_eq!(
        c.read("read_key", &json!({"key": "nope"}), &s).unwrap(),
        Value::Null
    );
    assert_eq!(c.read("read_timer", &Value::Null, &s).unwrap(), json!(9));
    assert_eq!(
        c.read("read_chat_last", &json!({}), &s).unwrap()["msg"],
        json!("m24")
    );
    let snap = c.read("read_snapshot", &Value::Null, &s).unwrap();
    assert_eq!(snap["something"], json!("there is something"));
    assert_eq!(snap["msgl"], json!(25));
    assert_eq!(snap["msg1"]["msg"], json!("m1"));
    assert_eq!(
        c.read("read_message", &json!({"id": 3}), &s).unwrap()["msg"],
        json!("m3")
    );
    assert_eq!(
        c.read("read_message", &json!({"id": 99}), &s).unwrap(),
        Value::Null
    );
    assert_eq!(
        c.read(
            "read_nick",
            &json!({"user": ALICE.to_ascii_uppercase()}),
            &s
        )
        .unwrap(),
        json!("al")
    );

    let page = c.read("read_messages", &Value::Null, &s).unwrap();
    assert_eq!(page["total"], json!(25));
    assert_eq!(page["messages"].as_array().unwrap().len(), 20);
    let page = c
        .read("read_messages", &json!({"from": 20, "limit": 100}), &s)
        .unwrap();
    let ids: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!(20), json!(21), json!(22), json!(23), json!(24)]);
    let page = c.read("read_messages", &json!({"from": 1000}), &s).unwrap();
    assert_eq!(page["messages"], json!([]));

    let e = c
        .read("read_messages", &json!({"limit": 101}), &s)
        .unwrap_err();
    assert_eq!(e.code(), "out_of_range");
    let e = c.read("read_key", &json!({}), &s).unwrap_err();
    assert!(e.to_string().contains("`key`"), "{e}");
    let e = c.read("read_nothing", &Value::Null, &s).unwrap_err();
    assert_eq!(e.code(), "unknown_read_function");
    let e = c.read("read_timer", &json!({"x": 1}), &s).unwrap_err();
    assert_eq!(e.code(), "unknown_field");
    let e = c.read("read_timer", &json!(3), &s).unwrap_err();
    assert_eq!(e.code(), "invalid_value");
}

#[test]
fn map_command_shortcuts_and_json() {
    let c = BuiltinContract;
    assert_eq!(
        c.map_command(" something ").unwrap(),
        Operation::new("store_something", Value::Null)
    );
    assert_eq!(
        c.map_command("store_something").unwrap(),
        Operation::new("store_something", Value::Null)
    );
    for read in ["read_snapshot", "read_chat_last", "read_timer"] {
        let e = c.map_command(read).unwrap_err();
        assert_eq!(e, ContractError::ReadFunction { name: read.into() });
        assert!(e.to_string().contains("read function"), "{e}");
    }
    for read in [r#"{"op":"read_key","key":"x"}"#, r#"{"op":"read_timer"}"#] {
        assert_eq!(c.map_command(read).unwrap_err().code(), "read_function");
    }
    assert_eq!(
        c.map_command(r#"{ "op" : "do_something", "some_key" : "some_data" }"#)
            .unwrap(),
        Operation::new("submit_something", json!({"some_key": "some_data"}))
    );
    let e = c.map_command(r#"{"op":"do_something"}"#).unwrap_err();
    assert_eq!(e.code(), "missing_field");
    assert_eq!(
        c.map_command(r#"{"op":"post","message":"hi","reply_to":null}"#)
            .unwrap(),
        Operation::new("post", json!({"message": "hi"}))
    );
    assert_eq!(
        c.map_command(r#"{"type":"set_mod","value":{"user":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","mod":1}}"#)
            .unwrap(),
        Operation::new("set_mod", json!({"user": ADMIN, "mod": true}))
    );
    let e = c.map_command(r#"{"op":"post","message":5}"#).unwrap_err();
    assert_eq!(e.code(), "wrong_type");
    let e = c.map_command("{not json").unwrap_err();
    assert_eq!(e.code(), "unknown_command");
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    let e = c.map_command("launch rockets").unwrap_err();
    assert_eq!(e.code(), "unknown_command");
    assert!(e.to_string().contains("\"something\""), "{e}");
    assert_eq!(c.map_command("post").unwrap_err().code(), "unknown_command");
    assert_eq!(c.map_command("").unwrap_err().code(), "unknown_command");
    let e = c.map_command(r#"{"op":"fly"}"#).unwrap_err();
    assert_eq!(e.code(), "unknown_operation");
}

#[test]
fn apply_validates_and_rejects_malformed_operations() {
    let mut s = chat();
    for (name, value, code) in [
        (
            "post",
            json!({"message": "hi", "extra": 1}),
            "unknown_field",
        ),
        ("post", json!(null), "invalid_value"),
        ("set_mod", json!({"user": "bob", "mod": true}), "wrong_type"),
        ("set_chat_status", json!({"enabled": 2}), "wrong_type"),
        ("delete_message", json!({"id": -1}), "out_of_range"),
        ("store_something", json!({"x": 1}), "unknown_field"),
        ("fly", json!(null), "unknown_operation"),
        ("read_timer", json!(null), "read_function"),
    ] {
        let e = fails(&mut s, ADMIN, name, value);
        assert_eq!(e.code(), code, "{name}: {e}");
    }
}

#[test]
fn corrupt_state_is_an_error_not_a_panic() {
    let mut s = chat();
    s.put("msgl", json!("many"));
    let e = fails(&mut s, ALICE, "post", json!({"message": "hi"}));
    assert_eq!(e.code(), "corrupt_state");
    assert!(e.to_string().contains("`msgl`"), "{e}");
    s.put("msgl", json!(1));
    s.put("msg/0", json!([1]));
    assert_eq!(
        fails(&mut s, ADMIN, "delete_message", json!({"id": 0})).code(),
        "corrupt_state"
    );
    s.put("msg/0", json!({"pin_id": "x"}));
    assert_eq!(
        fails(&mut s, ADMIN, "delete_message", json!({"id": 0})).code(),
        "corrupt_state"
    );
    assert_eq!(
        fails(&mut s, ADMIN, "pin_message", json!({"id": 0, "pin": true})).code(),
        "corrupt_state"
    );
    s.put("pni/0", json!({"msg": "x"}));
    assert_eq!(
        fails(&mut s, ADMIN, "unpin_message", json!({"pin_id": 0})).code(),
        "corrupt_state"
    );
    s.put("kvo/k", json!(5));
    assert_eq!(
        fails(&mut s, ADMIN, "put", json!({"key": "k", "value": 1})).code(),
        "corrupt_state"
    );
    s.put("msgl", json!(MAX_SAFE_INTEGER));
    assert_eq!(
        fails(&mut s, ALICE, "post", json!({"message": "hi"})).code(),
        "rejected"
    );
    assert_eq!(
        BuiltinContract
            .read("read_snapshot", &Value::Null, &s)
            .unwrap()["msgl"],
        json!(MAX_SAFE_INTEGER)
    );
}

#[test]
fn same_operations_give_identical_state() {
    let script: Vec<(&str, &str, Value)> = vec![
        (ADMIN, "set_chat_status", json!({"enabled": true})),
        (ADMIN, "set_mod", json!({"user": MOD, "mod": true})),
        (ALICE, "post", json!({"message": "hello"})),
        (BOB, "post", json!({"message": "hi", "reply_to": 0})),
        (ALICE, "set_nick", json!({"nick": "al"})),
        (BOB, "set_nick", json!({"nick": "al"})),
        (MOD, "pin_message", json!({"id": 1, "pin": true})),
        (MOD, "mute_status", json!({"user": BOB, "muted": true})),
        (BOB, "post", json!({"message": "muted"})),
        (ALICE, "put", json!({"key": "a", "value": {"x": [1, 2, 3]}})),
        (BOB, "delete", json!({"key": "a"})),
        (ALICE, "delete_message", json!({"id": 0})),
        (ALICE, "store_something", Value::Null),
    ];
    let run = || {
        let mut s = MemoryState::new();
        let results: Vec<bool> = script
            .iter()
            .map(|(author, name, value)| try_apply(&mut s, author, name, value.clone()).is_ok())
            .collect();
        (s, results)
    };
    let (a, ra) = run();
    let (b, rb) = run();
    assert_eq!(ra, rb);
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a.entries).unwrap(),
        serde_json::to_string(&b.entries).unwrap()
    );
    assert_eq!(ra.iter().filter(|ok| !**ok).count(), 3, "{ra:?}");
}
