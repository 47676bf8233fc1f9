//! The consultation call's quality in /metrics (issue 18, STANDARDS RTC-20, RTC-21), set by the
//! media adapter:
//!
//! - `huizhen_call_rtt_ms`, `huizhen_call_loss_percent`, `huizhen_call_jitter_ms`
//!   `{room, kind}`: the worst figure over the room's tracks of that kind (audio, video) in the
//!   last sampling round; a room's series are removed when it empties, so the label set is
//!   bounded by the rooms open at once;
//! - `huizhen_call_quality_alerts_total{kind, metric}`: alerts raised at the RTC-21
//!   thresholds (no room label: an ever-growing counter per room would never be removed);
//! - `huizhen_call_quality_alerts_active{metric}`: alerts raised and not cleared yet;
//! - `huizhen_call_participant_alerts_active{room, role}`: a room's alerts raised and not
//!   cleared, per participant role (at most four roles per room; removed with the room);
//! - `huizhen_call_rooms`: rooms with someone in them.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RoomKind {
    room: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindMetric {
    kind: String,
    metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RoomRole {
    room: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MetricLabel {
    metric: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

struct CallMetrics {
    rtt: Family<RoomKind, F64Gauge>,
    loss: Family<RoomKind, F64Gauge>,
    jitter: Family<RoomKind, F64Gauge>,
    alerts: Family<KindMetric, Counter>,
    active: Family<MetricLabel, Gauge>,
    by_role: Family<RoomRole, Gauge>,
    rooms: Gauge,
}

fn m() -> &'static CallMetrics {
    static M: OnceLock<CallMetrics> = OnceLock::new();
    M.get_or_init(|| CallMetrics {
        rtt: Family::default(),
        loss: Family::default(),
        jitter: Family::default(),
        alerts: Family::default(),
        active: Family::default(),
        by_role: Family::default(),
        rooms: Gauge::default(),
    })
}

/// Registers the process-wide call metrics into an engine's registry.
pub(crate) fn register(registry: &mut Registry) {
    let m = m();
    registry.register(
        "call_rtt_ms",
        "Worst round-trip time over a call room's tracks of a kind, last sampling round",
        m.rtt.clone(),
    );
    registry.register(
        "call_loss_percent",
        "Worst packet loss over a call room's tracks of a kind, last sampling round",
        m.loss.clone(),
    );
    registry.register(
        "call_jitter_ms",
        "Worst jitter over a call room's tracks of a kind, last sampling round",
        m.jitter.clone(),
    );
    registry.register(
        "call_quality_alerts",
        "Call quality alerts raised at the RTC-21 thresholds (RTT > 300 ms, loss > 5 % for 10 s, jitter > 50 ms, freeze > 2 s)",
        m.alerts.clone(),
    );
    registry.register(
        "call_quality_alerts_active",
        "Call quality alerts raised and not cleared yet",
        m.active.clone(),
    );
    registry.register(
        "call_participant_alerts_active",
        "Call quality alerts raised and not cleared yet in a room, per participant role",
        m.by_role.clone(),
    );
    registry.register(
        "call_rooms",
        "Call rooms with someone in them",
        m.rooms.clone(),
    );
}

/// The worst figures of `room`'s tracks of `kind` (`None`: not measured this round).
pub fn set_call_quality(
    room: &str,
    kind: &str,
    rtt_ms: Option<f64>,
    loss_pct: Option<f64>,
    jitter_ms: Option<f64>,
) {
    let l = RoomKind {
        room: room.to_owned(),
        kind: kind.to_owned(),
    };
    for (fam, v) in [
        (&m().rtt, rtt_ms),
        (&m().loss, loss_pct),
        (&m().jitter, jitter_ms),
    ] {
        if let Some(v) = v {
            fam.get_or_create(&l).set(v);
        }
    }
}

/// The active alerts of `room`'s participants in `role`.
pub fn set_call_role_alerts(room: &str, role: &str, active: i64) {
    m().by_role
        .get_or_create(&RoomRole {
            room: room.to_owned(),
            role: role.to_owned(),
        })
        .set(active);
}

/// Removes the series of `role` in `room` (nobody in that role there now).
pub fn forget_call_role_alerts(room: &str, role: &str) {
    m().by_role.remove(&RoomRole {
        room: room.to_owned(),
        role: role.to_owned(),
    });
}

/// Removes an emptied room's series.
pub fn forget_call_room(room: &str) {
    for role in ["expert", "local-physician", "patient", "observer"] {
        forget_call_role_alerts(room, role);
    }
    for kind in ["audio", "video"] {
        let l = RoomKind {
            room: room.to_owned(),
            kind: kind.to_owned(),
        };
        m().rtt.remove(&l);
        m().loss.remove(&l);
        m().jitter.remove(&l);
    }
}

/// An alert raised (`active`) or cleared.
pub fn call_alert(kind: &str, metric: &str, active: bool) {
    let g = m().active.get_or_create(&MetricLabel {
        metric: metric.to_owned(),
    });
    if active {
        m().alerts
            .get_or_create(&KindMetric {
                kind: kind.to_owned(),
                metric: metric.to_owned(),
            })
            .inc();
        g.inc();
    } else {
        g.dec();
    }
}

/// The number of rooms with someone in them.
pub fn set_call_rooms(n: usize) {
    m().rooms.set(i64::try_from(n).unwrap_or(i64::MAX));
}

/// Alerts of `metric` on `kind` raised by this process so far.
pub fn call_alerts_raised(kind: &str, metric: &str) -> u64 {
    m().alerts
        .get_or_create(&KindMetric {
            kind: kind.to_owned(),
            metric: metric.to_owned(),
        })
        .get()
}
