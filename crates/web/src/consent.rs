//! A patient's consent to one organisation, turned into what the system enforces. Pure.
//!
//! Consenting to organisation O for some categories, purposes and until a day makes three
//! things, each signed by the patient in the browser:
//! 1. the shared record: a FHIR Bundle of exactly the consented categories' resources,
//!    stored at `shared/<O's account>` (what is not consented is never in it, so it can
//!    never be fetched);
//! 2. a Cedar policy `consent-<O's account>` that lets O's node read that object for those
//!    purposes until that day (the holder decides every fetch by it, so revoking — removing
//!    it — takes effect on the very next fetch);
//! 3. a ledger registration of the shared record with a price and a coded description that
//!    names no person: the conditions' codes, the categories, the purposes and the audience.

use crate::search::{Code, CodedDescription};
use secnet_types::AccountId;
use secnet_types::limits::MAX_DESCRIPTION;
use serde_json::{Value, json};

/// What a patient can share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    /// Conditions (diagnoses).
    Conditions,
    /// Medication requests and statements.
    Medications,
    /// Observations (labs, vital signs).
    Observations,
    /// The Patient resource: name, birth date, gender.
    Demographics,
}

impl Category {
    /// Every category, in the order forms show them.
    pub const ALL: [Category; 4] = [
        Category::Conditions,
        Category::Medications,
        Category::Observations,
        Category::Demographics,
    ];

    /// Its name in forms and descriptions.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Conditions => "conditions",
            Category::Medications => "medications",
            Category::Observations => "observations",
            Category::Demographics => "demographics",
        }
    }

    /// Parses a form value.
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn covers(self, resource_type: &str) -> bool {
        match self {
            Category::Conditions => resource_type == "Condition",
            Category::Medications => {
                matches!(resource_type, "MedicationRequest" | "MedicationStatement")
            }
            Category::Observations => resource_type == "Observation",
            Category::Demographics => resource_type == "Patient",
        }
    }
}

/// The holder's share of what an organisation pays for a patient's shared record, in basis
/// points: the node that stores and serves it keeps a tenth, the patient is paid the rest.
pub const HOLDER_SHARE_BPS: u16 = 1_000;

/// Why something is shared.
pub const PURPOSES: [&str; 2] = ["treatment", "research"];

/// What a patient agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// The organisation whose node may read.
    pub audience: AccountId,
    /// What it may read (sorted, no repeats).
    pub categories: Vec<Category>,
    /// For which purposes (from [`PURPOSES`], sorted, no repeats).
    pub purposes: Vec<&'static str>,
    /// The last day reads are allowed, in days since the Unix epoch (UTC).
    pub until_day: u32,
    /// What one subscription costs.
    pub price: u64,
}

/// Why terms are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TermsError {
    /// Nothing chosen.
    #[error("choose at least one category to share")]
    NoCategory,
    /// No purpose chosen.
    #[error("choose at least one purpose (treatment or research)")]
    NoPurpose,
    /// A value no form offers.
    #[error("unknown {0}: {1:?}")]
    Unknown(&'static str, String),
    /// The end date is in the past or not a date.
    #[error("the end date must be a date (YYYY-MM-DD) from today on")]
    BadDate,
    /// The categories hold nothing to share.
    #[error("your records hold nothing in the chosen categories")]
    Empty,
}

impl Terms {
    /// Terms from form values; `today` in days since the Unix epoch.
    pub fn new(
        audience: AccountId,
        categories: &[String],
        purposes: &[String],
        until: &str,
        price: u64,
        today: u32,
    ) -> Result<Terms, TermsError> {
        let mut cats = Vec::new();
        for c in categories {
            cats.push(Category::parse(c).ok_or(TermsError::Unknown("category", c.clone()))?);
        }
        cats.sort();
        cats.dedup();
        let mut ps = Vec::new();
        for p in purposes {
            ps.push(
                PURPOSES
                    .into_iter()
                    .find(|k| k == p)
                    .ok_or(TermsError::Unknown("purpose", p.clone()))?,
            );
        }
        ps.sort();
        ps.dedup();
        if cats.is_empty() {
            return Err(TermsError::NoCategory);
        }
        if ps.is_empty() {
            return Err(TermsError::NoPurpose);
        }
        let until_day = day_of_date(until).ok_or(TermsError::BadDate)?;
        if until_day < today {
            return Err(TermsError::BadDate);
        }
        Ok(Terms {
            audience,
            categories: cats,
            purposes: ps,
            until_day,
            price,
        })
    }
}

/// Days since the Unix epoch of a `YYYY-MM-DD` date (proleptic Gregorian, UTC).
pub fn day_of_date(s: &str) -> Option<u32> {
    let mut parts = s.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > *month_days.get(usize::try_from(m - 1).ok()?)? {
        return None;
    }
    let (m, d) = (u32::try_from(m).ok()?, u32::try_from(d).ok()?);
    u32::try_from(secnet_types::date::days_from_civil(y, m, d)).ok()
}

/// The `YYYY-MM-DD` date of a day since the Unix epoch.
pub fn date_of_day(day: u32) -> String {
    let (y, m, d) = secnet_types::date::civil_from_days(i64::from(day));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Where the shared record for `audience` is stored, under the patient's account.
pub fn object_path(audience: &AccountId) -> String {
    format!("shared/{audience}")
}

/// The id of the consent policy for `audience`.
pub fn policy_id(audience: &AccountId) -> String {
    format!("consent-{audience}")
}

/// The Cedar policy of `terms`.
pub fn policy(terms: &Terms) -> String {
    let purposes = terms
        .purposes
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "@id(\"{id}\")\npermit (principal == SecNet::User::\"{who}\", action == SecNet::Action::\"read\", resource == SecNet::Object::\"{path}\")\nwhen {{ [{purposes}].contains(context.purpose) && context.day <= {until} }};\n",
        id = policy_id(&terms.audience),
        who = terms.audience,
        path = object_path(&terms.audience),
        until = terms.until_day,
    )
}

/// The fields of each shared resource type that are shared: the clinical facts. Narrative
/// (`text`), identifiers, references to the patient, encounters and practitioners, and
/// contained resources are never copied, so that consenting to conditions does not pass on a
/// name or a record number through them.
fn shared_fields(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Condition" => &[
            "clinicalStatus",
            "verificationStatus",
            "category",
            "severity",
            "code",
            "bodySite",
            "onsetDateTime",
            "onsetPeriod",
            "onsetAge",
            "abatementDateTime",
            "abatementPeriod",
            "recordedDate",
        ],
        "Observation" => &[
            "status",
            "category",
            "code",
            "effectiveDateTime",
            "effectivePeriod",
            "issued",
            "valueQuantity",
            "valueCodeableConcept",
            "valueString",
            "valueBoolean",
            "valueInteger",
            "interpretation",
            "referenceRange",
            "component",
        ],
        "MedicationRequest" => &[
            "status",
            "intent",
            "medicationCodeableConcept",
            "authoredOn",
            "dosageInstruction",
            "reasonCode",
        ],
        "MedicationStatement" => &[
            "status",
            "medicationCodeableConcept",
            "effectiveDateTime",
            "effectivePeriod",
            "dateAsserted",
            "dosage",
            "reasonCode",
        ],
        "Patient" => &["name", "birthDate", "gender"],
        _ => &[],
    }
}

/// The shared record: a FHIR Bundle (`collection`) of the resources in `records` (each a
/// FHIR resource) that the consented categories cover, in the order given, each reduced to
/// its [`shared_fields`] and given a fresh id (so that records shared with two organisations
/// cannot be joined by resource ids), its subject the bundle's one pseudonym.
pub fn shared_bundle(records: &[Value], terms: &Terms) -> Result<Vec<u8>, TermsError> {
    let entries: Vec<Value> = records
        .iter()
        .filter_map(|r| {
            let ty = r.get("resourceType").and_then(Value::as_str)?;
            terms
                .categories
                .iter()
                .any(|c| c.covers(ty))
                .then_some((ty, r))
        })
        .enumerate()
        .map(|(i, (ty, r))| {
            let mut kept = serde_json::Map::new();
            kept.insert("resourceType".into(), json!(ty));
            // The patient is one pseudonym within the bundle: `Patient/subject`.
            if ty == "Patient" {
                kept.insert("id".into(), json!("subject"));
            } else {
                kept.insert(
                    "id".into(),
                    json!(format!("{}-{}", ty.to_lowercase(), i + 1)),
                );
                kept.insert("subject".into(), json!({ "reference": "Patient/subject" }));
            }
            for f in shared_fields(ty) {
                if let Some(v) = r.get(*f) {
                    kept.insert((*f).to_string(), v.clone());
                }
            }
            json!({ "resource": Value::Object(kept) })
        })
        .collect();
    if entries.is_empty() {
        return Err(TermsError::Empty);
    }
    serde_json::to_vec(&json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": entries,
    }))
    .map_err(|_| TermsError::Empty)
}

/// The coded description registered for `terms`: the conditions' codes (SNOMED CT and
/// ICD-10 first, then others; as many as the ledger's description limit holds, names dropped
/// before codes), the categories, the purposes and the audience. It names no person.
pub fn description(records: &[Value], terms: &Terms) -> CodedDescription {
    let mut codes: Vec<Code> = Vec::new();
    if terms.categories.contains(&Category::Conditions) {
        for r in records.iter().filter(|r| r["resourceType"] == "Condition") {
            for c in r
                .pointer("/code/coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(system), Some(code)) = (c["system"].as_str(), c["code"].as_str()) else {
                    continue;
                };
                if codes.iter().any(|k| k.system == system && k.code == code) {
                    continue;
                }
                codes.push(Code {
                    system: system.into(),
                    code: code.into(),
                    display: c["display"].as_str().unwrap_or("").into(),
                });
            }
        }
    }
    let rank = |c: &Code| match c.system.as_str() {
        crate::search::SNOMED | crate::search::ICD10 => 0,
        _ => 1,
    };
    codes.sort_by_key(rank);
    let mut d = CodedDescription {
        secnet: "listing/v1".into(),
        resource: "Bundle".into(),
        codes,
        categories: terms
            .categories
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        purposes: terms.purposes.iter().map(|p| (*p).to_string()).collect(),
        audience: vec![terms.audience.to_string()],
    };
    // Keep names while they fit, then drop them from the last codes first, then codes.
    let mut i = d.codes.len();
    while d.to_description().len() > MAX_DESCRIPTION {
        if i > 0 {
            i -= 1;
            if let Some(c) = d.codes.get_mut(i) {
                c.display.clear();
            }
        } else if d.codes.pop().is_none() {
            break;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use secnet_types::Keypair;

    fn condition(code: &str, name: &str) -> Value {
        json!({"resourceType": "Condition", "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": name}]}})
    }

    fn terms(categories: &[&str], purposes: &[&str]) -> Result<Terms, TermsError> {
        Terms::new(
            Keypair::deterministic("hospital", 0).account(),
            &categories.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &purposes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "2030-01-01",
            10,
            day_of_date("2026-12-01").unwrap(),
        )
    }

    #[test]
    fn dates_and_days_agree() {
        assert_eq!(day_of_date("1970-01-01"), Some(0));
        assert_eq!(day_of_date("2000-03-01"), Some(11_017));
        assert_eq!(date_of_day(11_017), "2000-03-01");
        for day in (0..40_000).step_by(37) {
            assert_eq!(day_of_date(&date_of_day(day)), Some(day));
        }
        for bad in ["2023-02-29", "2024-13-01", "x", "2024-1", "1969-12-31", ""] {
            assert_eq!(day_of_date(bad), None, "{bad}");
        }
        assert_eq!(day_of_date("2024-02-29"), Some(19_782));
    }

    #[test]
    fn terms_are_checked() {
        assert_eq!(terms(&[], &["treatment"]), Err(TermsError::NoCategory));
        assert_eq!(terms(&["conditions"], &[]), Err(TermsError::NoPurpose));
        assert!(matches!(
            terms(&["blood"], &["treatment"]),
            Err(TermsError::Unknown("category", _))
        ));
        assert!(matches!(
            terms(&["conditions"], &["marketing"]),
            Err(TermsError::Unknown("purpose", _))
        ));
        let t = terms(
            &["observations", "conditions", "conditions"],
            &["treatment", "research"],
        )
        .unwrap();
        assert_eq!(t.categories, [Category::Conditions, Category::Observations]);
        assert_eq!(t.purposes, ["research", "treatment"]);
        let past = Terms::new(
            t.audience,
            &["conditions".into()],
            &["treatment".into()],
            "2020-01-01",
            1,
            day_of_date("2026-12-01").unwrap(),
        );
        assert_eq!(past, Err(TermsError::BadDate));
    }

    #[test]
    fn the_bundle_holds_only_consented_categories_and_the_description_no_person() {
        let mut with_identity = condition("44054006", "Diabetes mellitus type 2");
        with_identity["subject"] = json!({"reference": "urn:uuid:p1", "display": "Ann Lee"});
        with_identity["text"] = json!({"div": "<div>Ann Lee, MRN 12345</div>"});
        with_identity["identifier"] = json!([{"value": "MRN 12345"}]);
        with_identity["id"] = json!("secret-uuid");
        let records = vec![
            json!({"resourceType": "Patient", "name": [{"family": "Lee"}]}),
            with_identity,
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "HbA1c"}}),
            json!({"resourceType": "MedicationRequest"}),
        ];
        let t = terms(&["conditions", "observations"], &["treatment"]).unwrap();
        let bytes = shared_bundle(&records, &t).unwrap();
        // The holder stores only valid FHIR: the shared record is.
        assert_eq!(secnet_pdc::fhir::validate(&bytes).unwrap(), "Bundle");
        let bundle: Value = serde_json::from_slice(&bytes).unwrap();
        let types: Vec<&str> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Condition", "Observation"]);
        let shared = bundle.to_string();
        for leak in ["Lee", "12345", "urn:uuid:p1", "secret-uuid"] {
            assert!(!shared.contains(leak), "{leak} in {shared}");
        }
        assert_eq!(
            bundle["entry"][0]["resource"]["code"]["coding"][0]["code"],
            "44054006"
        );
        let d = description(&records, &t);
        let text = d.to_description();
        assert!(!text.contains("Lee"));
        assert_eq!(d.codes[0].code, "44054006");
        assert_eq!(d.audience, [t.audience.to_string()]);
        assert_eq!(CodedDescription::parse(&text), Some(d));
        let none = terms(&["medications"], &["treatment"]).unwrap();
        assert!(shared_bundle(&[records[0].clone()], &none).is_err());
    }

    #[test]
    fn a_long_list_of_codes_fits_the_ledgers_limit() {
        let records: Vec<Value> = (0..200)
            .map(|i| {
                condition(
                    &format!("{}", 100_000 + i),
                    "A rather long condition name here",
                )
            })
            .collect();
        let t = terms(&["conditions"], &["research"]).unwrap();
        let d = description(&records, &t);
        assert!(d.to_description().len() <= MAX_DESCRIPTION);
        assert!(d.codes.len() >= 8, "{}", d.codes.len());
        assert_eq!(d.codes[0].code, "100000");
    }

    #[test]
    fn the_policy_validates_and_names_the_audience() {
        let t = terms(&["conditions"], &["treatment", "research"]).unwrap();
        let p = policy(&t);
        assert!(p.contains(&format!("SecNet::User::\"{}\"", t.audience)));
        assert!(p.contains(&format!("context.day <= {}", t.until_day)));
        let engine = secnet_policy::Engine::new(500_000).unwrap();
        let checked = engine.check(&p).unwrap();
        assert_eq!(checked.ids(), [policy_id(&t.audience)]);
    }
}
