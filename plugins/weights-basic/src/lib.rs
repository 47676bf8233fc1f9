//! `weights-basic`: fixed weights and the three grading thresholds of patient-identity matching
//! (a `match-weights` plugin, contract 0.1.1). Its 0.1.0 build (two thresholds,
//! `engine/plugin/tests/fixtures/contract-0.1.0/weights_basic.wasm`) is kept as the host's
//! fixture for the older contract.

use huizhen_sdk::match_weights::{Guest, Weights};

pub struct WeightsBasic;

impl Guest for WeightsBasic {
    fn weights() -> Weights {
        Weights {
            fields: vec![
                ("name".into(), (9.0, -4.0)),
                ("birth_date".into(), (8.0, -6.0)),
            ],
            auto_link_threshold: Some(40.0),
            probable_threshold: 25.0,
            possible_threshold: 12.0,
        }
    }
}

huizhen_sdk::match_weights_plugin!(WeightsBasic);
