//! `read` finds every problem of a document in one call, each at its exact span, and
//! reads what is right the way serde's derive would.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::config::HumanDuration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read for its problems
struct File {
    name: String,
    listen: SocketAddr,
    window: HumanDuration,
    count: Spanned<u32>,
    #[serde(default)]
    flag: bool,
    mode: Option<Mode>,
    limits: Option<Rate>,
    #[serde(default)]
    items: Vec<Item>,
    at: Option<toml::value::Datetime>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    FirstCome,
    Raffle,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Rate {
    rate: u32,
    per: HumanDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Item {
    sku: String,
    stock: i64,
}

const GOOD: &str = r#"name = "n"
listen = "127.0.0.1:80"
window = "1m"
count = 3
mode = "raffle"
limits = { rate = 1, per = "1s" }
at = 2026-11-11T00:00:00+08:00

[[items]]
sku = "a"
stock = 1
"#;

/// Each problem as `line:col path: what`, in file order.
fn problems(src: &str) -> (Option<File>, Vec<String>) {
    let doc = Doc::parse(src).expect("valid TOML");
    let read = read::<File>(&doc);
    let mut shown: Vec<_> = read
        .problems
        .iter()
        .map(|p| {
            let (l, c) = crate::config::diagnostics::line_col(src, p.span.start);
            format!("{l}:{c} {}: {:?}", p.path, p.what)
        })
        .collect();
    shown.sort();
    (read.value, shown)
}

#[test]
fn a_good_file_reads_like_serde() {
    let (file, found) = problems(GOOD);
    assert_eq!(found, Vec::<String>::new());
    let file = file.unwrap();
    assert_eq!(file.mode, Some(Mode::Raffle));
    assert_eq!(file.count.span(), GOOD.find('3').map(|s| s..s + 1).unwrap());
    assert_eq!(file.items.len(), 1);
    assert!(!file.flag);
    let from_toml: File = toml::from_str(GOOD).unwrap();
    assert_eq!(format!("{from_toml:?}"), format!("{:?}", file));
}

#[test]
fn every_problem_is_found_at_once() {
    let src = r#"listen = 5
window = 5
count = -1
colour = "red"
mode = "rafle"
limits = { rate = "x",
  per = "1s", jitter = 2 }
at = "tomorrow"

[[items]]
sku = "a"
stock = "ten"

[[items]]
stok = 2
"#;
    let (file, found) = problems(src);
    assert!(file.is_some(), "stand-ins make a value");
    assert_eq!(
        found,
        [
            "12:9 items[0].stock: Wrong(\"expected an integer, found the string \\\"ten\\\"\")",
            "14:1 items[1].sku: Missing",
            "14:1 items[1].stock: Missing",
            "15:1 items[1].stok: Unknown([\"sku\", \"stock\"])",
            "1:1 name: Missing",
            "1:10 listen: Wrong(\"expected socket address, found the integer 5\")",
            "2:10 window: Wrong(\"expected a string, found the integer 5\")",
            "3:9 count: Wrong(\"expected a whole number (0 or more), found the integer -1\")",
            "4:1 colour: Unknown([\"name\", \"listen\", \"window\", \"count\", \"flag\", \"mode\", \"limits\", \"items\", \"at\"])",
            "5:8 mode: Wrong(\"unknown value `rafle`: did you mean `raffle`?\")",
            "6:19 limits.rate: Wrong(\"expected a whole number (0 or more), found the string \\\"x\\\"\")",
            "7:15 limits.jitter: Unknown([\"rate\", \"per\"])",
            "8:6 at: Wrong(\"expected a date-time such as 2026-11-11T00:00:00+08:00, found the string \\\"tomorrow\\\"\")",
        ]
    );
}

#[test]
fn a_wrong_table_is_one_problem() {
    let src = GOOD.replace("limits = { rate = 1, per = \"1s\" }", "limits = 5");
    let (_, found) = problems(&src);
    assert_eq!(
        found,
        ["6:10 limits: Wrong(\"expected a table, found the integer 5\")"]
    );
}

#[test]
fn an_array_is_not_a_table() {
    let src = GOOD.replace(
        "limits = { rate = 1, per = \"1s\" }",
        "limits = [1, \"1s\"]",
    );
    let (_, found) = problems(&src);
    assert_eq!(
        found,
        ["6:10 limits: Wrong(\"expected a table, found an array\")"]
    );
}

#[test]
fn stand_ins_are_flawed_and_the_rest_is_read() {
    let src = GOOD.replace("count = 3", "count = \"three\"");
    let doc = Doc::parse(&src).unwrap();
    let read = read::<File>(&doc);
    let file = read.value.unwrap();
    assert_eq!(*file.count.get_ref(), 0, "the stand-in");
    assert_eq!(read.flawed, [KeyPath::parse("count")]);
    assert_eq!(file.mode, Some(Mode::Raffle), "the rest as written");
}

#[test]
fn an_empty_file_misses_each_required_key() {
    let (_, found) = problems("");
    assert_eq!(
        found,
        [
            "1:1 count: Missing",
            "1:1 listen: Missing",
            "1:1 name: Missing",
            "1:1 window: Missing",
        ]
    );
}

#[test]
fn a_date_time_where_text_is_wanted_says_so() {
    let src = GOOD.replace("name = \"n\"", "name = 2026-01-01");
    let (_, found) = problems(&src);
    assert_eq!(
        found,
        ["1:8 name: Wrong(\"expected a string, found a date-time\")"]
    );
}
