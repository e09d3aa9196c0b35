//! One task per channel and worker pings its connections and closes idle ones (a task per
//! connection would cost memory on every idle connection).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::def::ChannelDef;
use crate::hub::ConnEntry;

pub(crate) fn watch<S>(def: &Rc<ChannelDef<S>>, entry: &Arc<ConnEntry>) {
    def.beats.borrow_mut().push(Arc::downgrade(entry));
    if !def.beating.replace(true) {
        let (interval, idle) = (def.config.heartbeat_interval, def.config.idle_timeout);
        actix_rt::spawn(run(def.beats.clone(), interval, idle));
    }
}

/// Lives as long as the worker's runtime.
async fn run(beats: Rc<RefCell<Vec<Weak<ConnEntry>>>>, interval: Duration, idle: Duration) {
    let period = interval.max(Duration::from_millis(1));
    let mut ticks = actix_rt::time::interval_at(actix_rt::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        beats
            .borrow_mut()
            .retain(|w| w.upgrade().is_some_and(|entry| entry.beat(idle)));
    }
}
