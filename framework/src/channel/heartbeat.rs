//! One task per channel and worker pings its connections and closes idle ones (a task per
//! connection would cost memory on every idle connection).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::beats::Beats;
use super::def::ChannelDef;
use crate::hub::ConnEntry;

pub(crate) fn watch<S>(def: &Rc<ChannelDef<S>>, entry: &Arc<ConnEntry>) {
    def.beats.borrow_mut().add(entry);
    if !def.beating.replace(true) {
        let (interval, idle) = (def.config.heartbeat_interval, def.config.idle_timeout);
        actix_rt::spawn(run(def.beats.clone(), interval, idle));
    }
}

/// A connection of `def` ended.
pub(crate) fn ended<S>(def: &ChannelDef<S>) {
    // Busy only while the heartbeat itself sweeps, which then takes care of the dead.
    if let Ok(mut beats) = def.beats.try_borrow_mut() {
        beats.ended();
    }
}

/// Lives as long as the worker's runtime.
async fn run(beats: Rc<RefCell<Beats<ConnEntry>>>, interval: Duration, idle: Duration) {
    let period = interval.max(Duration::from_millis(1));
    let mut ticks = actix_rt::time::interval_at(actix_rt::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        beats.borrow_mut().retain(|entry| entry.beat(idle));
    }
}
