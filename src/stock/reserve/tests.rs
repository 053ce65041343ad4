use std::collections::HashSet;

use super::*;
use crate::stock::reply::raw;
use crate::stock::scripts::Recorded;
use crate::stock::Pick;

fn keys() -> CampaignKeys {
    CampaignKeys::new("fg", "c1")
}

fn buy(keys: &CampaignKeys, user: &str, idem: Option<&str>, member: Option<&[u8]>) -> Buy {
    let r = ReserveRequest {
        keys,
        item_key: "fg:{c1}:item:a",
        campaign: "c1",
        sku: "a",
        user,
        quantity: 2,
        per_user_limit: 3,
        payment_window: Duration::from_secs(60),
        amount_cents: 1998,
        idempotency_key: idem,
        initial_stock: 100,
        holders_version: idem.map(|_| 7),
        raffle_member: member,
    };
    Buy::new(&r, format!("ID-{user}.c1"))
}

#[test]
fn a_call_is_the_campaigns_keys_then_four_keys_and_thirteen_values_per_buy() {
    let k = keys();
    let buys = [
        buy(&k, "u1", None, None),
        buy(&k, "u2", Some("idem-1"), Some(b"\x00ticket")),
    ];
    let mut call = Recorded::default();
    let deadline = |b: &Buy| (b.user == "u2").then_some(4_321);
    ReserveCall {
        keys: &k,
        buys: &buys,
    }
    .encode(&mut call, deadline);

    assert_eq!(
        call.keys(),
        [
            "fg:{c1}:deadlines",
            "fg:{c1}:paused",
            "fg:{c1}:claims",
            "fg:{c1}:selection",
            "fg:{c1}:admission",
            "fg:{c1}:entrants",
            "fg:{c1}:ranking",
            "fg:{c1}:item:a",
            "fg:{c1}:user:u1",
            "fg:{c1}:holders:a",
            "fg:{c1}:order:ID-u1.c1",
            "fg:{c1}:item:a",
            "fg:{c1}:user:u2",
            "fg:{c1}:holders:a",
            "fg:{c1}:order:ID-u2.c1",
        ]
    );
    let per_buy = |user: &str, idem: &str, hv: &str, deadline: &str, raffle: &str| {
        [
            "a",
            user,
            "2",
            "3",
            &format!("ID-{user}.c1"),
            "60000",
            "1998",
            idem,
            "100",
            hv,
            deadline,
            raffle,
        ]
        .map(str::to_owned)
    };
    let mut want = vec!["fg:{c1}:".to_owned(), "c1".to_owned()];
    want.extend(per_buy("u1", "", "", "", ""));
    want.push(String::new());
    want.extend(per_buy("u2", "idem-1", "7", "4321", "raffle"));
    want.push("\u{0}ticket".to_owned());
    assert_eq!(call.args(), want);
}

/// The script reads the same layout its header documents: keys from 8 + 4(i-1), values
/// from 3 + 13(i-1).
#[test]
fn the_scripts_header_documents_the_same_layout() {
    let lua = include_str!("../../../lua/reserve.lua");
    for needle in [
        "Then 4 keys per buy i (from 8 + 4(i-1))",
        "Then 13 values per buy i (from 3 + 13(i-1))",
        "local n = (#ARGV - 2) / 13",
        "local k = 8 + 4 * (i - 1)",
        "3 + 13 * (i - 1)",
    ] {
        assert!(lua.contains(needle), "lua/reserve.lua lacks {needle:?}");
    }
    let k = keys();
    for n in 0..3 {
        let buys: Vec<Buy> = (0..n)
            .map(|i| buy(&k, &format!("u{i}"), None, None))
            .collect();
        let mut call = Recorded::default();
        ReserveCall {
            keys: &k,
            buys: &buys,
        }
        .encode(&mut call, |_| None);
        assert_eq!(call.keys.len(), 7 + 4 * n);
        assert_eq!(call.args.len(), 2 + 13 * n);
    }
}

fn order_fields() -> Vec<Option<&'static str>> {
    vec![
        Some("ID.c1"),
        Some("c1"),
        Some("a"),
        Some("u1"),
        Some("1"),
        Some("999"),
        Some("pending_payment"),
        Some("10"),
        Some("70"),
        None,
        None,
    ]
}

fn with_tag(tag: &'static str, rest: Vec<Option<&'static str>>) -> Raw {
    let mut v = vec![Some(tag)];
    v.extend(rest);
    raw(&v)
}

#[test]
fn every_documented_reply_parses() {
    let p = |r: &[Option<&str>]| ReserveReply::parse(raw(r)).unwrap();
    assert_eq!(
        p(&[Some("reserved"), Some("123")]),
        ReserveReply::Reserved { created_at: 123 }
    );
    let ReserveReply::Existing(o) =
        ReserveReply::parse(with_tag("existing", order_fields())).expect("existing")
    else {
        panic!("not existing")
    };
    assert_eq!(
        (o.order_id.as_str(), o.quantity, o.pay_by),
        ("ID.c1", 1, 70)
    );
    assert_eq!(
        p(&[Some("idem_mismatch")]),
        ReserveReply::IdempotencyKeyReused
    );
    assert_eq!(
        p(&[Some("sold_out"), Some("0"), Some("4")]),
        ReserveReply::SoldOut {
            remaining: 0,
            holders: HoldersUpdate::Unchanged
        }
    );
    assert_eq!(
        p(&[
            Some("sold_out"),
            Some("0"),
            Some("4"),
            Some("holders"),
            Some("u1"),
            Some("u2")
        ]),
        ReserveReply::SoldOut {
            remaining: 0,
            holders: HoldersUpdate::Fresh(Holders {
                version: Some(4),
                users: HashSet::from(["u1".to_owned(), "u2".to_owned()]),
            })
        }
    );
    assert_eq!(
        p(&[Some("sold_out"), Some("0"), Some("4"), Some("holders")]),
        ReserveReply::SoldOut {
            remaining: 0,
            holders: HoldersUpdate::Fresh(Holders {
                version: Some(4),
                users: HashSet::new(),
            })
        }
    );
    assert_eq!(
        p(&[Some("sold_out"), Some("0"), Some("4"), Some("many")]),
        ReserveReply::SoldOut {
            remaining: 0,
            holders: HoldersUpdate::TooMany
        }
    );
    assert_eq!(
        p(&[Some("limit"), Some("2")]),
        ReserveReply::LimitReached { held: 2 }
    );
    assert_eq!(p(&[Some("paused")]), ReserveReply::Paused);
    assert_eq!(p(&[Some("late"), Some("99")]), ReserveReply::TooLate);
    assert_eq!(
        p(&[
            Some("not_selected"),
            Some("5"),
            None,
            Some("3"),
            Some("l:6:7"),
            Some("9")
        ]),
        ReserveReply::NotSelected(EntryState {
            entered_at: Some(5),
            drawn_at: None,
            next: 3,
            selection: Some(crate::stock::Selection {
                pick: Pick::Lapsed,
                selected_at: 6,
                claim_by: 7
            }),
            rank: Some(9),
        })
    );
}

#[test]
fn a_reply_it_does_not_know_is_an_error_never_a_guess() {
    let bad: &[&[Option<&str>]] = &[
        &[],
        &[None],
        &[Some("bogus")],
        &[Some("Reserved"), Some("1")],
        // missing fields
        &[Some("reserved")],
        &[Some("limit")],
        &[Some("sold_out"), Some("0")],
        &[Some("late")],
        &[Some("not_selected"), None, None, Some("0"), None],
        // not numbers
        &[Some("reserved"), Some("soon")],
        &[Some("reserved"), None],
        &[Some("limit"), Some("1.5")],
        &[Some("sold_out"), Some("x"), Some("1")],
        &[Some("sold_out"), Some("0"), Some("")],
        &[Some("not_selected"), Some("t"), None, Some("0"), None, None],
        &[Some("not_selected"), None, None, Some("-1"), None, None],
        &[
            Some("not_selected"),
            None,
            None,
            Some("0"),
            Some("x:1:2"),
            None,
        ],
        &[
            Some("not_selected"),
            None,
            None,
            Some("0"),
            None,
            Some("-3"),
        ],
        // unknown markers, nils, fields left over
        &[Some("sold_out"), Some("0"), Some("1"), Some("some")],
        &[
            Some("sold_out"),
            Some("0"),
            Some("1"),
            Some("many"),
            Some("u1"),
        ],
        &[
            Some("sold_out"),
            Some("0"),
            Some("1"),
            Some("holders"),
            None,
        ],
        &[Some("reserved"), Some("1"), Some("2")],
        &[Some("paused"), Some("1")],
    ];
    for r in bad {
        let got = ReserveReply::parse(raw(r));
        assert!(
            matches!(got, Err(StoreError::Protocol(_))),
            "{r:?} gave {got:?}"
        );
    }
    // An order with a field missing, a bad number or an unknown status.
    let mut short = order_fields();
    short.pop();
    let mut bad_qty = order_fields();
    bad_qty[4] = Some("one");
    let mut bad_status = order_fields();
    bad_status[6] = Some("shipped");
    let mut extra = order_fields();
    extra.push(Some("x"));
    for fields in [short, bad_qty, bad_status, extra] {
        let got = ReserveReply::parse(with_tag("existing", fields));
        assert!(matches!(got, Err(StoreError::Protocol(_))), "{got:?}");
    }
}

#[test]
fn a_void_call_is_four_keys_then_one_key_and_two_values_per_order() {
    let k = keys();
    let voids = [
        Void::of(&buy(&k, "u1", None, None)),
        Void::of(&buy(&k, "u2", Some("idem-1"), None)),
    ];
    let mut call = Recorded::default();
    VoidCall {
        keys: &k,
        voids: &voids,
    }
    .encode(&mut call);
    assert_eq!(
        call.keys(),
        [
            "fg:{c1}:deadlines",
            "fg:{c1}:claims",
            "fg:{c1}:selection",
            "fg:{c1}:admission",
            "fg:{c1}:order:ID-u1.c1",
            "fg:{c1}:order:ID-u2.c1",
        ]
    );
    assert_eq!(
        call.args(),
        ["fg:{c1}:", "ID-u1.c1", "", "ID-u2.c1", "idem-1"]
    );
}

#[test]
fn a_void_reply_is_two_counts() {
    assert_eq!(
        VoidReply::parse(raw(&[Some("2"), Some("0")])).unwrap(),
        VoidReply { undone: 2, kept: 0 }
    );
    for r in [
        &[Some("2")][..],
        &[Some("2"), Some("x")],
        &[Some("2"), None],
        &[Some("-1"), Some("0")],
        &[Some("1"), Some("0"), Some("0")],
    ] {
        assert!(VoidReply::parse(raw(r)).is_err(), "{r:?}");
    }
}

#[test]
fn a_reservation_is_the_buys_order_created_at_redis_time() {
    let k = keys();
    let r = ReserveRequest {
        keys: &k,
        item_key: "fg:{c1}:item:a",
        campaign: "c1",
        sku: "a",
        user: "u1",
        quantity: 2,
        per_user_limit: 3,
        payment_window: Duration::from_secs(60),
        amount_cents: 1998,
        idempotency_key: None,
        initial_stock: 100,
        holders_version: None,
        raffle_member: None,
    };
    let ReserveOutcome::Reserved(o) =
        ReserveReply::Reserved { created_at: 5_000 }.outcome(&r, "ID.c1".into())
    else {
        panic!("not reserved")
    };
    assert_eq!(
        (
            o.order_id.as_str(),
            o.created_at,
            o.pay_by,
            o.amount_cents,
            o.status
        ),
        ("ID.c1", 5_000, 65_000, 1998, OrderStatus::PendingPayment)
    );
}
