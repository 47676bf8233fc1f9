//! A `match-weights` plugin: the weights and thresholds of patient-identity matching.

use huizhen_sdk::match_weights::{Guest, Weights};

pub struct Plugin;

impl Guest for Plugin {
    fn weights() -> Weights {
        Weights {
            fields: vec![
                ("id_number".into(), (12.0, -10.0)),
                ("name".into(), (4.0, -4.0)),
                ("birth_date".into(), (5.0, -6.0)),
                ("phone".into(), (3.0, -1.0)),
            ],
            // None: a probabilistic score never links automatically (STANDARDS MATCH-05).
            auto_link_threshold: None,
            probable_threshold: 14.0,
            possible_threshold: 4.0,
        }
    }
}

huizhen_sdk::match_weights_plugin!(Plugin);
