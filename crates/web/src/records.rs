//! A readable view of FHIR R4 resources: conditions, medications, observations and
//! encounters with their codes, values and dates, and the patient's demographics. Pure:
//! JSON in, rows out. Anything a resource does not say is shown as "—", never guessed.

use serde_json::Value;

/// One row of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What it is (the code's name, or the text).
    pub what: String,
    /// Its code, e.g. `SNOMED CT 44054006`.
    pub code: String,
    /// The value (observations), the dose or the status.
    pub value: String,
    /// When (onset, effective date, authored date or start), as written.
    pub date: String,
}

/// One section of the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its heading.
    pub title: &'static str,
    /// Its rows, newest first.
    pub rows: Vec<Row>,
}

/// Who the record is about, when demographics are part of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Demographics {
    /// Name as written.
    pub name: String,
    /// Date of birth.
    pub birth_date: String,
    /// Administrative gender.
    pub gender: String,
}

/// A record as pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordView {
    /// Demographics, if a Patient resource is present.
    pub patient: Option<Demographics>,
    /// Conditions, medications, observations, encounters (empty sections kept out).
    pub sections: Vec<Section>,
    /// Resources of other types, counted.
    pub other: usize,
}

impl RecordView {
    /// How many resources the view shows.
    pub fn len(&self) -> usize {
        self.sections.iter().map(|s| s.rows.len()).sum::<usize>()
            + usize::from(self.patient.is_some())
    }

    /// Whether it shows nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The section a resource type is shown in.
pub fn section_of(resource_type: &str) -> Option<&'static str> {
    match resource_type {
        "Condition" => Some("Conditions"),
        "MedicationRequest" | "MedicationStatement" => Some("Medications"),
        "Observation" => Some("Observations"),
        "Encounter" => Some("Encounters"),
        _ => None,
    }
}

const ORDER: [&str; 4] = ["Conditions", "Medications", "Observations", "Encounters"];

fn text(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

fn system_name(system: &str) -> &str {
    match system {
        "http://snomed.info/sct" => "SNOMED CT",
        "http://loinc.org" => "LOINC",
        "http://www.nlm.nih.gov/research/umls/rxnorm" => "RxNorm",
        "http://hl7.org/fhir/sid/icd-10" | "http://hl7.org/fhir/sid/icd-10-cm" => "ICD-10",
        other => other,
    }
}

/// The name and code of a CodeableConcept.
fn concept(c: &Value) -> (String, String) {
    let coding = c.get("coding").and_then(Value::as_array);
    let first = coding.and_then(|a| a.first());
    let name = text(&c["text"])
        .or_else(|| first.and_then(|f| text(&f["display"])))
        .unwrap_or("—")
        .to_string();
    let code = first
        .map(|f| {
            format!(
                "{} {}",
                system_name(text(&f["system"]).unwrap_or("")),
                text(&f["code"]).unwrap_or("")
            )
            .trim()
            .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "—".into());
    (name, code)
}

fn first_text<'a>(r: &'a Value, fields: &[&str]) -> Option<&'a str> {
    fields.iter().find_map(|f| {
        let mut v = r;
        for part in f.split('.') {
            v = &v[part];
        }
        text(v)
    })
}

fn quantity(q: &Value) -> Option<String> {
    let value = q.get("value")?;
    let n = value
        .as_f64()
        .map(|f| {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                format!("{:.2}", f)
            }
        })
        .unwrap_or_else(|| value.to_string());
    let unit = text(&q["unit"]).or_else(|| text(&q["code"])).unwrap_or("");
    Some(format!("{n} {unit}").trim().to_string())
}

fn observation_value(r: &Value) -> String {
    if let Some(q) = r.get("valueQuantity").and_then(quantity) {
        return q;
    }
    if let Some(c) = r.get("valueCodeableConcept") {
        return concept(c).0;
    }
    if let Some(s) = first_text(r, &["valueString"]) {
        return s.to_string();
    }
    if let Some(parts) = r.get("component").and_then(Value::as_array) {
        let shown: Vec<String> = parts
            .iter()
            .filter_map(|p| {
                let name = concept(&p["code"]).0;
                p.get("valueQuantity")
                    .and_then(quantity)
                    .map(|q| format!("{name}: {q}"))
            })
            .collect();
        if !shown.is_empty() {
            return shown.join("; ");
        }
    }
    "—".into()
}

/// The row of one resource, or `None` for a type without a section.
pub fn row(r: &Value) -> Option<(&'static str, Row)> {
    let ty = r["resourceType"].as_str()?;
    let section = section_of(ty)?;
    let row = match ty {
        "Condition" => {
            let (what, code) = concept(&r["code"]);
            Row {
                what,
                code,
                value: r
                    .get("clinicalStatus")
                    .map(|c| concept(c).0.replace('—', "").trim().to_string())
                    .filter(|s| !s.is_empty())
                    .or_else(|| {
                        r.pointer("/clinicalStatus/coding/0/code")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| "—".into()),
                date: first_text(r, &["onsetDateTime", "recordedDate", "onsetPeriod.start"])
                    .unwrap_or("—")
                    .to_string(),
            }
        }
        "MedicationRequest" | "MedicationStatement" => {
            let (what, code) = concept(&r["medicationCodeableConcept"]);
            Row {
                what,
                code,
                value: first_text(r, &["status"]).unwrap_or("—").to_string(),
                date: first_text(r, &["authoredOn", "effectiveDateTime", "dateAsserted"])
                    .unwrap_or("—")
                    .to_string(),
            }
        }
        "Observation" => {
            let (what, code) = concept(&r["code"]);
            Row {
                what,
                code,
                value: observation_value(r),
                date: first_text(r, &["effectiveDateTime", "issued", "effectivePeriod.start"])
                    .unwrap_or("—")
                    .to_string(),
            }
        }
        _ => {
            let (what, code) = r["type"]
                .as_array()
                .and_then(|t| t.first())
                .map(concept)
                .unwrap_or_else(|| ("Encounter".into(), "—".into()));
            Row {
                what,
                code,
                value: first_text(r, &["class.code", "status"])
                    .unwrap_or("—")
                    .to_string(),
                date: first_text(r, &["period.start"]).unwrap_or("—").to_string(),
            }
        }
    };
    Some((section, row))
}

fn demographics(r: &Value) -> Demographics {
    let name = r["name"]
        .as_array()
        .and_then(|n| n.first())
        .map(|n| {
            if let Some(t) = text(&n["text"]) {
                return t.to_string();
            }
            let given: Vec<&str> = n["given"]
                .as_array()
                .map(|g| g.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("{} {}", given.join(" "), text(&n["family"]).unwrap_or(""))
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "—".into());
    Demographics {
        name,
        birth_date: first_text(r, &["birthDate"]).unwrap_or("—").to_string(),
        gender: first_text(r, &["gender"]).unwrap_or("—").to_string(),
    }
}

/// The view of `resources` (each a FHIR resource; a Bundle's entries are read through).
pub fn view<'a>(resources: impl IntoIterator<Item = &'a Value>) -> RecordView {
    let mut out = RecordView::default();
    let mut sections: Vec<Section> = ORDER
        .iter()
        .map(|t| Section {
            title: t,
            rows: Vec::new(),
        })
        .collect();
    let mut add = |r: &Value, out: &mut RecordView| {
        if r["resourceType"] == "Patient" {
            out.patient = Some(demographics(r));
        } else if let Some((title, row)) = row(r) {
            if let Some(s) = sections.iter_mut().find(|s| s.title == title) {
                s.rows.push(row);
            }
        } else {
            out.other += 1;
        }
    };
    for r in resources {
        if r["resourceType"] == "Bundle" {
            for e in r["entry"].as_array().into_iter().flatten() {
                add(&e["resource"], &mut out);
            }
        } else {
            add(r, &mut out);
        }
    }
    for s in &mut sections {
        // ISO dates sort as text; rows without a date go last.
        s.rows
            .sort_by(|a, b| (b.date != "—", &b.date).cmp(&(a.date != "—", &a.date)));
    }
    out.sections = sections
        .into_iter()
        .filter(|s| !s.rows.is_empty())
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resources_become_rows_with_codes_values_and_dates() {
        let resources = [
            json!({"resourceType": "Patient", "name": [{"given": ["Ann", "B."], "family": "Lee"}], "birthDate": "1970-01-02", "gender": "female"}),
            json!({"resourceType": "Condition", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}]}, "clinicalStatus": {"coding": [{"code": "active"}]}, "onsetDateTime": "2001-05-06"}),
            json!({"resourceType": "Condition", "code": {"text": "Asthma"}, "recordedDate": "2010-01-01"}),
            json!({"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "HbA1c"}]}, "valueQuantity": {"value": 7.25, "unit": "%"}, "effectiveDateTime": "2020-02-02"}),
            json!({"resourceType": "Observation", "code": {"text": "Blood pressure"}, "component": [{"code": {"text": "Systolic"}, "valueQuantity": {"value": 120, "unit": "mm[Hg]"}}]}),
            json!({"resourceType": "MedicationRequest", "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975", "display": "Metformin"}]}, "status": "active", "authoredOn": "2001-05-07"}),
            json!({"resourceType": "Encounter", "type": [{"text": "Check-up"}], "class": {"code": "AMB"}, "period": {"start": "2020-02-02"}}),
            json!({"resourceType": "Claim"}),
        ];
        let v = view(resources.iter());
        let p = v.patient.clone().unwrap();
        assert_eq!(
            (p.name.as_str(), p.gender.as_str()),
            ("Ann B. Lee", "female")
        );
        let titles: Vec<_> = v.sections.iter().map(|s| s.title).collect();
        assert_eq!(
            titles,
            ["Conditions", "Medications", "Observations", "Encounters"]
        );
        let conditions = &v.sections[0].rows;
        assert_eq!(conditions[0].what, "Asthma");
        assert_eq!(conditions[0].code, "—");
        assert_eq!(conditions[1].code, "SNOMED CT 44054006");
        assert_eq!(conditions[1].value, "active");
        let obs = &v.sections[2].rows;
        assert_eq!(obs[0].value, "7.25 %");
        assert_eq!(obs[1].value, "Systolic: 120 mm[Hg]");
        assert_eq!(obs[1].date, "—");
        assert_eq!(v.sections[1].rows[0].code, "RxNorm 860975");
        assert_eq!(v.sections[3].rows[0].value, "AMB");
        assert_eq!(v.other, 1);
        assert_eq!(v.len(), 8 - 1);

        let bundle = json!({"resourceType": "Bundle", "entry": resources.iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()});
        assert_eq!(view([&bundle]), v);
    }

    #[test]
    fn odd_resources_show_dashes_not_errors() {
        let odd = [
            json!({"resourceType": "Condition"}),
            json!({"resourceType": "Observation", "valueQuantity": {"value": "x"}}),
            json!({"resourceType": 7}),
            json!("text"),
        ];
        let v = view(odd.iter());
        assert_eq!(v.sections[0].rows[0].what, "—");
        assert_eq!(v.sections[1].rows[0].value, "\"x\"");
    }
}
