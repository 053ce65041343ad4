//! The Lua scripts in `lua/`, embedded at build time. Each is prefixed with `lib.lua`
//! (shared helpers) and invoked by SHA; redis-rs reloads a script on NOSCRIPT and retries.

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../../lua/lib.lua"),
            "\n",
            include_str!(concat!("../../lua/", $file))
        ))
    };
}

pub(crate) struct Scripts {
    pub(crate) reserve: Script,
    pub(crate) cancel: Script,
    pub(crate) confirm: Script,
    pub(crate) expire: Script,
    pub(crate) init: Script,
    pub(crate) adjust: Script,
    pub(crate) dead_letter: Script,
    pub(crate) replay_dead: Script,
    pub(crate) forget_consumers: Script,
    pub(crate) enter: Script,
    pub(crate) draw: Script,
    pub(crate) entry: Script,
    pub(crate) heartbeat: Script,
    pub(crate) void: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            reserve: script!("reserve.lua"),
            cancel: script!("cancel.lua"),
            confirm: script!("confirm.lua"),
            expire: script!("expire.lua"),
            init: script!("init.lua"),
            adjust: script!("adjust.lua"),
            dead_letter: script!("dead_letter.lua"),
            replay_dead: script!("replay_dead.lua"),
            forget_consumers: script!("forget_consumers.lua"),
            enter: script!("enter.lua"),
            draw: script!("draw.lua"),
            entry: script!("entry.lua"),
            void: script!("void.lua"),
            heartbeat: script!("heartbeat.lua"),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 14] {
        [
            &self.reserve,
            &self.cancel,
            &self.confirm,
            &self.expire,
            &self.init,
            &self.adjust,
            &self.dead_letter,
            &self.replay_dead,
            &self.forget_consumers,
            &self.enter,
            &self.draw,
            &self.entry,
            &self.heartbeat,
            &self.void,
        ]
    }
}
