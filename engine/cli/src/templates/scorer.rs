//! A `scorer` plugin: scores an expert for a case, explaining each feature's share.

use huizhen_sdk::scorer::{self, Contribution, Feature, Guest, Score};

pub struct Plugin;

impl Guest for Plugin {
    fn score(case: Vec<Feature>, expert: Vec<Feature>) -> Result<Score, String> {
        let years = scorer::number(&expert, "years").unwrap_or(0.0) * 2.0;
        let urgent = if scorer::text(&case, "urgency") == Some("critical") { 20.0 } else { 0.0 };
        Ok(Score {
            total: years + urgent,
            contributions: vec![
                Contribution { feature: "years".into(), points: years },
                Contribution { feature: "urgency".into(), points: urgent },
            ],
        })
    }

    fn score_many(case: Vec<Feature>, candidates: Vec<Vec<Feature>>) -> Result<Vec<Score>, String> {
        scorer::score_each(&case, candidates, Self::score)
    }
}

huizhen_sdk::scorer_plugin!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use huizhen_sdk::scorer::{num, txt};

    #[test]
    fn scores() {
        let s = Plugin::score(vec![txt("urgency", "critical")], vec![num("years", 10.0)]).unwrap();
        assert_eq!(s.total, 40.0);
    }
}
