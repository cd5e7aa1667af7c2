//! Periodic release of real-time threads (`make_periodic` /
//! `wait_for_next_period`), with overruns counted, never hidden.
//!
//! Each job is released at `start + k * period` and must finish (call
//! wait-for-next-period) by its next release: finishing later is a deadline
//! miss. A thread that overruns by more than one whole period does not get a
//! burst of back-to-back late jobs: it is released once, at once, and every
//! release it slept through is counted as skipped (and as a miss).

/// The release schedule and overrun counters of one periodic thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Periodic {
    period_ns: u64,
    /// Release time of the job that runs now (or the first, before it).
    current_release_ns: u64,
    started: bool,
    releases: u64,
    misses: u64,
    skipped: u64,
}

/// What wait-for-next-period should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Sleep until this instant (it may already be past: then run at once).
    pub release_ns: u64,
    /// Whether the job that just finished missed its deadline.
    pub missed: bool,
    /// Releases passed over because the thread overran past them.
    pub skipped: u64,
}

impl Periodic {
    /// A schedule whose first release is at `start_ns`, then every `period_ns`.
    pub fn new(start_ns: u64, period_ns: u64) -> Self {
        Self { period_ns: period_ns.max(1), current_release_ns: start_ns, started: false, releases: 0, misses: 0, skipped: 0 }
    }

    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// Called when the thread waits for its next period at `now_ns`.
    pub fn next_wait(&mut self, now_ns: u64) -> Wait {
        if !self.started {
            self.started = true;
            self.releases += 1;
            return Wait { release_ns: self.current_release_ns, missed: false, skipped: 0 };
        }
        let deadline = self.current_release_ns.saturating_add(self.period_ns);
        let missed = now_ns > deadline;
        let mut next = deadline;
        let mut skipped = 0;
        if now_ns >= next.saturating_add(self.period_ns) {
            // Slept through whole periods: release once, at the latest due instant.
            let behind = (now_ns - next) / self.period_ns;
            skipped = behind;
            next = next.saturating_add(behind * self.period_ns);
        }
        if missed {
            self.misses += 1 + skipped;
        }
        self.skipped += skipped;
        self.current_release_ns = next;
        self.releases += 1;
        Wait { release_ns: next, missed, skipped }
    }

    /// Release time of the current job.
    pub fn current_release_ns(&self) -> u64 {
        self.current_release_ns
    }

    /// Jobs released so far.
    pub fn releases(&self) -> u64 {
        self.releases
    }

    /// Deadlines missed (late finishes plus releases slept through).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Releases that never ran because the thread overran past them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_on_the_grid_without_misses() {
        let mut periodic = Periodic::new(1_000, 1_000_000);
        assert_eq!(periodic.next_wait(0), Wait { release_ns: 1_000, missed: false, skipped: 0 });
        // The job ran 200 µs; next release one period after the first.
        assert_eq!(periodic.next_wait(201_000), Wait { release_ns: 1_001_000, missed: false, skipped: 0 });
        assert_eq!(periodic.next_wait(1_500_000), Wait { release_ns: 2_001_000, missed: false, skipped: 0 });
        assert_eq!((periodic.releases(), periodic.misses(), periodic.skipped()), (3, 0, 0));
    }

    #[test]
    fn finishing_exactly_at_the_deadline_is_not_a_miss() {
        let mut periodic = Periodic::new(0, 100);
        periodic.next_wait(0);
        assert_eq!(periodic.next_wait(100), Wait { release_ns: 100, missed: false, skipped: 0 });
    }

    #[test]
    fn overrun_within_a_period_is_one_miss_and_an_immediate_release() {
        let mut periodic = Periodic::new(0, 100);
        periodic.next_wait(0);
        // Job released at 0 finishes at 150: deadline 100 missed; release 100 is due.
        assert_eq!(periodic.next_wait(150), Wait { release_ns: 100, missed: true, skipped: 0 });
        assert_eq!(periodic.misses(), 1);
        // Back on time afterwards.
        assert_eq!(periodic.next_wait(180), Wait { release_ns: 200, missed: false, skipped: 0 });
        assert_eq!(periodic.misses(), 1);
    }

    #[test]
    fn sleeping_through_periods_counts_every_skipped_release() {
        let mut periodic = Periodic::new(0, 100);
        periodic.next_wait(0);
        // Job released at 0 finishes at 450: releases 100, 200, 300 never ran;
        // the thread is released once at 400.
        assert_eq!(periodic.next_wait(450), Wait { release_ns: 400, missed: true, skipped: 3 });
        assert_eq!((periodic.misses(), periodic.skipped()), (4, 3));
        assert_eq!(periodic.next_wait(460), Wait { release_ns: 500, missed: false, skipped: 0 });
    }
}
