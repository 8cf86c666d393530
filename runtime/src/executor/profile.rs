//! The executor's opt-in profile (`Executor::start_profile`): per launch, the wall time summed over
//! the profiled steps; a bounded record of launch and step events (for percentiles and traces);
//! and per pool thread, the time it spent running kernel rows.
//!
//! Everything it keeps is allocated when profiling is switched on: the events go into buffers of
//! the capacities asked for, and those past them are counted, not kept, so a profiled step
//! allocates nothing either. Off, a step pays one branch per launch (and the pool one per job).
//!
//! A launch's time is the wall time the calling thread sees: its own rows plus the wait for the
//! workers'. A planted delay (`PlantedDelay`, for testing regression checks) sleeps inside the
//! timed span of every launch whose label contains a given text, and only while profiling.

use super::Executor;
use std::time::{Duration, Instant};

/// How to profile (`Executor::start_profile`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileOptions {
    /// How many launch events to keep (one per launch run); later ones are counted in
    /// `StepProfile::dropped`. 0 keeps only the sums.
    pub launch_events: usize,
    /// How many step events to keep; later ones are counted in `StepProfile::dropped`.
    pub step_events: usize,
    /// A delay added to matching launches, to test that a regression check catches it.
    pub plant: Option<PlantedDelay>,
}

/// A slowdown planted on purpose: each launch whose label contains `label` sleeps `delay` inside
/// its timed span. Only a profiled step sleeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlantedDelay {
    /// Text a launch's label must contain (`layer 1 q_proj`).
    pub label: String,
    /// How long each matching launch sleeps.
    pub delay: Duration,
}

/// One launch run in a profiled step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchEvent {
    /// The step (0 for the first profiled step).
    pub step: u32,
    /// The launch's index in `Program::launches`.
    pub launch: u32,
    /// When it started, in nanoseconds since profiling was switched on.
    pub start_ns: u64,
    /// Its wall time in nanoseconds.
    pub dur_ns: u64,
}

/// One profiled step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepEvent {
    /// The step (0 for the first profiled step).
    pub step: u32,
    /// Tokens it ran (all sequences together).
    pub tokens: u32,
    /// Sequences it ran.
    pub feeds: u32,
    /// When it started, in nanoseconds since profiling was switched on.
    pub start_ns: u64,
    /// Its wall time in nanoseconds (every launch, and the step's own bookkeeping).
    pub dur_ns: u64,
}

/// Where the time of the profiled steps went (`Executor::profile`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepProfile {
    /// Steps run since profiling was switched on.
    pub steps: u64,
    /// Per launch (in `Program::launches` order), nanoseconds summed over those steps.
    pub launch_ns: Vec<u64>,
    /// Launch events, in the order they ran (at most `ProfileOptions::launch_events`).
    pub launches: Vec<LaunchEvent>,
    /// Step events (at most `ProfileOptions::step_events`).
    pub step_events: Vec<StepEvent>,
    /// Events not kept because their buffer was full.
    pub dropped: u64,
    /// Per pool thread (the calling thread first), nanoseconds spent running this executor's
    /// kernel rows in profiled steps.
    pub busy_ns: Vec<u64>,
}

/// The profile being recorded, with what it needs besides the data.
pub(super) struct Profiler {
    pub(super) data: StepProfile,
    origin: Instant,
    /// Per launch, whether the planted delay applies to it.
    planted: Vec<bool>,
    delay: Duration,
}

impl Profiler {
    /// Records launch `i`, which started at `start` (sleeping first if the delay is planted on it).
    pub(super) fn launch(&mut self, i: usize, start: Instant) {
        if self.planted.get(i).copied().unwrap_or(false) {
            std::thread::sleep(self.delay);
        }
        let dur_ns = start.elapsed().as_nanos() as u64;
        if let Some(ns) = self.data.launch_ns.get_mut(i) {
            *ns += dur_ns;
        }
        let event = LaunchEvent {
            step: self.data.steps as u32,
            launch: i as u32,
            start_ns: self.since_origin(start),
            dur_ns,
        };
        push_bounded(&mut self.data.launches, event, &mut self.data.dropped);
    }

    /// Records the end of a step of `tokens` tokens over `feeds` sequences that started at `start`.
    pub(super) fn step(&mut self, start: Instant, tokens: usize, feeds: usize) {
        let event = StepEvent {
            step: self.data.steps as u32,
            tokens: tokens as u32,
            feeds: feeds as u32,
            start_ns: self.since_origin(start),
            dur_ns: start.elapsed().as_nanos() as u64,
        };
        push_bounded(&mut self.data.step_events, event, &mut self.data.dropped);
        self.data.steps += 1;
    }

    fn since_origin(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_nanos() as u64
    }
}

/// Pushes `event` if `events` has room left in its capacity (so it never reallocates), else
/// counts it in `dropped`.
fn push_bounded<T>(events: &mut Vec<T>, event: T, dropped: &mut u64) {
    if events.len() < events.capacity() {
        events.push(event);
    } else {
        *dropped += 1;
    }
}

impl Executor {
    /// Switches the launch profile on as `options` say (counters zeroed, event buffers allocated
    /// here, not per step), replacing any profile being recorded.
    pub fn start_profile(&mut self, options: &ProfileOptions) {
        let program = &self.shared.program;
        let planted = program
            .launches
            .iter()
            .map(|l| {
                options
                    .plant
                    .as_ref()
                    .is_some_and(|p| l.label.contains(&p.label))
            })
            .collect();
        let threads = {
            let mut pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.reset_busy();
            pool.threads()
        };
        self.profile = Some(Profiler {
            data: StepProfile {
                steps: 0,
                launch_ns: vec![0; program.launches.len()],
                launches: Vec::with_capacity(options.launch_events),
                step_events: Vec::with_capacity(options.step_events),
                dropped: 0,
                busy_ns: vec![0; threads],
            },
            origin: Instant::now(),
            planted,
            delay: options.plant.as_ref().map_or(Duration::ZERO, |p| p.delay),
        });
    }

    /// Switches the launch profile on with sums only (no events, no planted delay) or off.
    pub fn set_profiling(&mut self, on: bool) {
        if on {
            self.start_profile(&ProfileOptions::default());
        } else {
            self.profile = None;
        }
    }

    /// Switches the profile off and returns what it recorded, if it was on.
    pub fn stop_profile(&mut self) -> Option<StepProfile> {
        self.profile.take().map(|p| p.data)
    }

    /// The launch profile since profiling was switched on, if it is on.
    pub fn profile(&self) -> Option<&StepProfile> {
        self.profile.as_ref().map(|p| &p.data)
    }
}
