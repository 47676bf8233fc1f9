//! `expert-score`: the platform's reference scoring of an expert for a consultation case (a
//! `scorer` plugin). The rule is in [`score`]; this file maps the WIT features onto it.
//!
//! Feature names are the engine's (`huizhen_domain::expert` features). Case features read:
//! `urgency` (text: the engine sends `routine`/`urgent`; `critical`/危急 are accepted too).
//! Expert features read: `title` (text), `years`, `median_response_minutes` (numbers; the older
//! name `avg_response_minutes` is read when the median is absent). Others are ignored; no
//! patient attribute is read (STANDARDS MATCH-30).
//!
//! Contract 0.1.1: `score-many` scores every candidate of a case in one call (the engine's
//! batched path); `score` stays for callers of one candidate.

pub mod score;

use huizhen_sdk::scorer::{self, Contribution, Feature, Guest, Score};

pub struct ExpertScore;

/// One candidate under the already-read case.
fn one(c: &score::Case, expert: &[Feature]) -> Result<Score, String> {
    let e = score::Expert {
        title: scorer::text(expert, "title"),
        years: scorer::number(expert, "years"),
        response_minutes: scorer::number(expert, "median_response_minutes")
            .or_else(|| scorer::number(expert, "avg_response_minutes")),
    };
    let (total, parts) = score::score(c, &e)?;
    Ok(Score {
        total,
        contributions: parts
            .into_iter()
            .map(|(f, points)| Contribution {
                feature: f.into(),
                points,
            })
            .collect(),
    })
}

impl Guest for ExpertScore {
    fn score(case: Vec<Feature>, expert: Vec<Feature>) -> Result<Score, String> {
        let c = score::Case {
            urgency: scorer::text(&case, "urgency"),
        };
        one(&c, &expert)
    }

    fn score_many(case: Vec<Feature>, candidates: Vec<Vec<Feature>>) -> Result<Vec<Score>, String> {
        let c = score::Case {
            urgency: scorer::text(&case, "urgency"),
        };
        candidates
            .iter()
            .enumerate()
            .map(|(i, e)| one(&c, e).map_err(|err| format!("candidate {i}: {err}")))
            .collect()
    }
}

huizhen_sdk::scorer_plugin!(ExpertScore);

#[cfg(test)]
mod tests {
    use super::*;
    use huizhen_sdk::scorer::{num, txt};

    #[test]
    fn the_reference_rule() {
        let s = ExpertScore::score(
            vec![txt("urgency", "critical")],
            vec![
                txt("title", "主任医师"),
                num("years", 20.0),
                num("avg_response_minutes", 12.0),
            ],
        )
        .unwrap();
        assert_eq!(s.total, 50.0 + 40.0 + 36.0 + 20.0);
        let names: Vec<&str> = s.contributions.iter().map(|c| c.feature.as_str()).collect();
        assert_eq!(names, ["title", "years", "response", "urgency"]);
        let s = ExpertScore::score(vec![], vec![txt("title", "副主任医师")]).unwrap();
        assert_eq!(s.total, 30.0);
        assert!(ExpertScore::score(vec![], vec![num("years", -1.0)]).is_err());
    }

    #[test]
    fn the_engine_feature_names_and_the_batch() {
        let case = vec![txt("urgency", "urgent")];
        let a = vec![
            txt("title", "主任医师"),
            num("median_response_minutes", 12.0),
        ];
        let b = vec![txt("title", "主治医师"), num("years", 5.0)];
        let many = ExpertScore::score_many(case.clone(), vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[0].total, 50.0 + 36.0 + 20.0);
        assert_eq!(
            many[0].total,
            ExpertScore::score(case.clone(), a).unwrap().total
        );
        assert_eq!(
            many[1].total,
            ExpertScore::score(case.clone(), b).unwrap().total
        );
        let err =
            ExpertScore::score_many(case, vec![vec![], vec![num("years", -2.0)]]).unwrap_err();
        assert!(err.starts_with("candidate 1:"), "{err}");
    }
}
