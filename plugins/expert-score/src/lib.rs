//! `expert-score`: the platform's reference scoring of an expert for a consultation case (a
//! `scorer` plugin). The rule is in [`score`]; this file maps the WIT features onto it.
//!
//! Case features read: `urgency` (text). Expert features read: `title` (text), `years`,
//! `avg_response_minutes` (numbers). Others are ignored; no patient attribute is read
//! (STANDARDS MATCH-30).

pub mod score;

use huizhen_sdk::scorer::{self, Contribution, Feature, Guest, Score};

pub struct ExpertScore;

impl Guest for ExpertScore {
    fn score(case: Vec<Feature>, expert: Vec<Feature>) -> Result<Score, String> {
        let c = score::Case {
            urgency: scorer::text(&case, "urgency"),
        };
        let e = score::Expert {
            title: scorer::text(&expert, "title"),
            years: scorer::number(&expert, "years"),
            avg_response_minutes: scorer::number(&expert, "avg_response_minutes"),
        };
        let (total, parts) = score::score(&c, &e)?;
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
}
