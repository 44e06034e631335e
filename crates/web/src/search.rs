//! Searching the data registered on the ledger by disease: by code (SNOMED CT exactly,
//! ICD-10 with its children) or by text, for a purpose. Pure: listings in, hits out.
//!
//! A listing is searchable by code when its description is a coded description, the JSON
//! object `{"secnet": "listing/v1", "resource", "codes": [{"system", "code", "display"}],
//! "categories", "purposes"}` — what a patient's consent registers, naming no person. Other
//! descriptions are matched by text only, and state no purpose.

use serde::{Deserialize, Serialize};

/// The SNOMED CT code system's URI.
pub const SNOMED: &str = "http://snomed.info/sct";
/// The ICD-10 code system's URI.
pub const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
/// Most hits a search returns.
pub const MAX_HITS: usize = 200;

/// A code of a coded description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// The code system's URI.
    pub system: String,
    /// The code.
    pub code: String,
    /// Its human-readable name.
    #[serde(default)]
    pub display: String,
}

/// A listing's description in coded form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodedDescription {
    /// Always `listing/v1`.
    pub secnet: String,
    /// The FHIR resource type shared (`Condition`, `Observation` …).
    pub resource: String,
    /// What it is about.
    pub codes: Vec<Code>,
    /// Which categories of the record are shared (`conditions`, `medications` …).
    #[serde(default)]
    pub categories: Vec<String>,
    /// For which purposes (`treatment`, `research`).
    #[serde(default)]
    pub purposes: Vec<String>,
    /// The accounts (hex) of the organisations the owner consented to; empty: not stated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
}

impl CodedDescription {
    /// A coded description of shared conditions named by one code, for `purposes`.
    pub fn condition(system: &str, code: &str, display: &str, purposes: &[&str]) -> Self {
        CodedDescription {
            secnet: "listing/v1".into(),
            resource: "Condition".into(),
            codes: vec![Code {
                system: system.into(),
                code: code.into(),
                display: display.into(),
            }],
            categories: vec!["conditions".into()],
            purposes: purposes.iter().map(|p| (*p).to_string()).collect(),
            audience: Vec::new(),
        }
    }

    /// The form it is registered in: the listing's description.
    pub fn to_description(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a coded description; `None` for any other text.
    pub fn parse(description: &str) -> Option<CodedDescription> {
        if !description.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str::<CodedDescription>(description)
            .ok()
            .filter(|d| d.secnet == "listing/v1")
    }
}

/// A registered listing as the search sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The registration's id (its transaction's hash), hex.
    pub id: String,
    /// The content hash, hex.
    pub hash: String,
    /// Who holds and serves it, hex.
    pub holder: String,
    /// Who registered it (the owner), hex.
    pub owner: String,
    /// Price of a subscription.
    pub price: u64,
    /// The description as registered.
    pub description: String,
}

/// What a search is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Treating a patient (clinicians).
    Treatment,
    /// Research (researchers).
    Research,
    /// Any purpose (administrators, who cannot request access).
    Any,
}

impl Purpose {
    fn allows(self, purposes: &[String]) -> bool {
        match self {
            Purpose::Any => true,
            Purpose::Treatment => purposes.iter().any(|p| p == "treatment"),
            Purpose::Research => purposes.iter().any(|p| p == "research"),
        }
    }
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A SNOMED CT concept id: matched exactly.
    Snomed(String),
    /// An ICD-10 code: matched with its children (`E11` matches `E11.9`).
    Icd10(String),
    /// Words: each must appear in the description or a code's name (case-insensitive).
    Text(Vec<String>),
}

impl Query {
    /// Reads what a user typed.
    pub fn parse(q: &str) -> Query {
        let q = q.trim();
        if (6..=18).contains(&q.len()) && q.bytes().all(|b| b.is_ascii_digit()) {
            return Query::Snomed(q.to_string());
        }
        let upper = q.to_ascii_uppercase();
        let b = upper.as_bytes();
        let icd = b.len() >= 3
            && b.len() <= 8
            && b.first().is_some_and(u8::is_ascii_uppercase)
            && b.get(1..3)
                .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
            && match b.get(3..) {
                None | Some([]) => true,
                Some([b'.', rest @ ..]) => {
                    !rest.is_empty() && rest.iter().all(u8::is_ascii_alphanumeric)
                }
                Some(_) => false,
            };
        if icd {
            return Query::Icd10(upper);
        }
        Query::Text(
            q.split_whitespace()
                .map(str::to_lowercase)
                .filter(|w| !w.is_empty())
                .take(8)
                .collect(),
        )
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The listing.
    pub listed: Listed,
    /// Its coded description, if it has one.
    pub coded: Option<CodedDescription>,
}

fn code_matches(query: &Query, code: &Code) -> bool {
    match query {
        Query::Snomed(q) => code.system == SNOMED && code.code == *q,
        Query::Icd10(q) => {
            code.system == ICD10
                && (code.code.eq_ignore_ascii_case(q)
                    || code
                        .code
                        .to_ascii_uppercase()
                        .strip_prefix(q.as_str())
                        .is_some_and(|rest| rest.starts_with('.') && !q.contains('.')))
        }
        Query::Text(_) => false,
    }
}

fn text_matches(words: &[String], listed: &Listed, coded: Option<&CodedDescription>) -> bool {
    if words.is_empty() {
        return false;
    }
    let mut haystack = listed.description.to_lowercase();
    if let Some(c) = coded {
        for code in &c.codes {
            haystack.push(' ');
            haystack.push_str(&code.display.to_lowercase());
        }
    }
    words.iter().all(|w| haystack.contains(w.as_str()))
}

/// The listings `query` finds for `purpose`, at most [`MAX_HITS`], in the order given.
/// `coded(i)` is listing `i`'s coded description (the caller keeps them parsed).
pub fn search<'a>(
    listings: impl IntoIterator<Item = (&'a Listed, Option<&'a CodedDescription>)>,
    query: &Query,
    purpose: Purpose,
) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (listed, coded) in listings {
        let purposes_ok = match coded {
            Some(c) => purpose.allows(&c.purposes),
            None => purpose == Purpose::Any,
        };
        if !purposes_ok {
            continue;
        }
        let found = match query {
            Query::Text(words) => text_matches(words, listed, coded),
            _ => coded.is_some_and(|c| c.codes.iter().any(|code| code_matches(query, code))),
        };
        if found {
            hits.push(Hit {
                listed: listed.clone(),
                coded: coded.cloned(),
            });
            if hits.len() == MAX_HITS {
                break;
            }
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn coded(system: &str, code: &str, display: &str, purposes: &[&str]) -> String {
        CodedDescription::condition(system, code, display, purposes).to_description()
    }

    fn listed(i: usize, description: String) -> Listed {
        Listed {
            id: format!("id{i}"),
            hash: format!("h{i}"),
            holder: "holder".into(),
            owner: "owner".into(),
            price: 10,
            description,
        }
    }

    fn run(listings: &[Listed], q: &str, purpose: Purpose) -> Vec<String> {
        let parsed: Vec<Option<CodedDescription>> = listings
            .iter()
            .map(|l| CodedDescription::parse(&l.description))
            .collect();
        search(
            listings.iter().zip(parsed.iter().map(Option::as_ref)),
            &Query::parse(q),
            purpose,
        )
        .into_iter()
        .map(|h| h.listed.id)
        .collect()
    }

    #[test]
    fn codes_match_exactly_or_with_their_icd_children_and_only_for_the_consented_purpose() {
        let listings = vec![
            listed(
                0,
                coded(
                    SNOMED,
                    "44054006",
                    "Diabetes mellitus type 2",
                    &["treatment"],
                ),
            ),
            listed(
                1,
                coded(
                    ICD10,
                    "E11.9",
                    "Type 2 diabetes without complications",
                    &["treatment", "research"],
                ),
            ),
            listed(
                2,
                coded(
                    ICD10,
                    "E110",
                    "not a child of E11 in dotted form",
                    &["treatment"],
                ),
            ),
            listed(3, coded(SNOMED, "38341003", "Hypertension", &["research"])),
            listed(4, "Type 2 diabetes, free text".into()),
        ];
        assert_eq!(run(&listings, "44054006", Purpose::Treatment), ["id0"]);
        assert_eq!(
            run(&listings, "4405400", Purpose::Treatment),
            Vec::<String>::new()
        );
        assert_eq!(run(&listings, "e11", Purpose::Treatment), ["id1"]);
        assert_eq!(run(&listings, "E11.9", Purpose::Research), ["id1"]);
        assert_eq!(run(&listings, "E11.9", Purpose::Treatment), ["id1"]);
        assert_eq!(
            run(&listings, "E11.6", Purpose::Treatment),
            Vec::<String>::new()
        );
        assert_eq!(
            run(&listings, "38341003", Purpose::Treatment),
            Vec::<String>::new()
        );
        assert_eq!(run(&listings, "38341003", Purpose::Research), ["id3"]);
        // Text: every word, in descriptions and codes' names; uncoded listings state no
        // purpose, so only a search for any purpose finds them.
        assert_eq!(
            run(&listings, "type 2 DIABETES", Purpose::Treatment),
            ["id0", "id1"]
        );
        assert_eq!(
            run(&listings, "type 2 diabetes", Purpose::Any),
            ["id0", "id1", "id4"]
        );
        assert_eq!(run(&listings, "", Purpose::Any), Vec::<String>::new());
    }

    #[test]
    fn queries_are_read_as_codes_only_when_they_have_a_code_s_form() {
        assert_eq!(Query::parse(" 44054006 "), Query::Snomed("44054006".into()));
        assert_eq!(Query::parse("e11.65"), Query::Icd10("E11.65".into()));
        assert_eq!(Query::parse("I10"), Query::Icd10("I10".into()));
        assert_eq!(Query::parse("E1"), Query::Text(vec!["e1".into()]));
        assert_eq!(Query::parse("E11."), Query::Text(vec!["e11.".into()]));
        assert_eq!(Query::parse("12345"), Query::Text(vec!["12345".into()]));
        assert_eq!(
            Query::parse("a b c d e f g h i j"),
            Query::Text(("abcdefgh".chars().map(|c| c.to_string())).collect())
        );
        assert!(CodedDescription::parse("{\"secnet\":\"other\"}").is_none());
        assert!(CodedDescription::parse("plain text").is_none());
    }
}
