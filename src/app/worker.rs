//! The app's background worker: one thread that runs one job at a time (loading, registering,
//! exporting), reports its stage and progress on a shared board, stops when the user cancels,
//! and turns errors and panics into messages, so the UI thread never waits on compute or files.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::error::Error;
use crate::progress::{CancelFlag, Progress};

/// A unit of background work: it reads the board for cancellation and returns what the UI
/// should receive.
pub type Job<T> = Box<dyn FnOnce(&Board) -> crate::Result<T> + Send>;

/// How a job ended.
pub enum Outcome<T> {
    Done(T),
    Cancelled,
    Failed(String),
}

/// What the UI reads while a job runs.
#[derive(Clone, Debug, Default)]
pub struct BoardState {
    pub job: Option<String>,
    pub stage: String,
    pub done: u64,
    pub total: u64,
    pub started: Option<Instant>,
    pub log: Vec<String>,
}

impl BoardState {
    /// Share of the current stage done, when the stage has a known size.
    pub fn fraction(&self) -> Option<f32> {
        (self.total > 0).then(|| (self.done as f32 / self.total as f32).min(1.0))
    }
}

/// The progress board a job writes to and the UI reads; also the job's cancel flag.
pub struct Board {
    state: Mutex<BoardState>,
    cancel: CancelFlag,
    /// Called whenever the board changes, so the UI repaints (egui's `request_repaint`).
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Board {
    fn state(&self) -> MutexGuard<'_, BoardState> {
        // A poisoned lock only means a job panicked while holding it; the state is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> BoardState {
        self.state().clone()
    }

    pub fn log(&self, line: impl Into<String>) {
        self.state().log.push(line.into());
        (self.wake)();
    }
}

impl Progress for Board {
    fn start_stage(&self, name: &str, total: u64) {
        {
            let mut state = self.state();
            state.stage = name.to_string();
            state.done = 0;
            state.total = total;
            let elapsed = state.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
            state.log.push(format!("{elapsed:7.1} s  {name}"));
        }
        (self.wake)();
    }

    fn advance(&self, units: u64) {
        self.state().done += units;
        (self.wake)();
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.is_set()
    }
}

/// Runs jobs on one background thread, one at a time.
pub struct Worker<T: Send + 'static> {
    board: Arc<Board>,
    jobs: Option<Sender<(String, Job<T>)>>,
    outcomes: Receiver<(String, Outcome<T>)>,
    busy: bool,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Self {
        let board = Arc::new(Board { state: Mutex::default(), cancel: CancelFlag::default(), wake: Box::new(wake) });
        let (job_sender, job_receiver) = channel::<(String, Job<T>)>();
        let (outcome_sender, outcomes) = channel();
        let thread_board = board.clone();
        let thread = std::thread::Builder::new()
            .name("diffeoreg-worker".into())
            .spawn(move || {
                for (name, job) in job_receiver {
                    let outcome = match catch_unwind(AssertUnwindSafe(|| job(&thread_board))) {
                        Ok(Ok(value)) => Outcome::Done(value),
                        Ok(Err(Error::Cancelled)) => Outcome::Cancelled,
                        Ok(Err(error)) => Outcome::Failed(error.to_string()),
                        Err(panic) => Outcome::Failed(format!("internal error: {}", panic_message(&panic))),
                    };
                    if outcome_sender.send((name, outcome)).is_err() {
                        break;
                    }
                    (thread_board.wake)();
                }
            })
            .expect("the operating system refused to start the worker thread");
        Worker { board, jobs: Some(job_sender), outcomes, busy: false, thread: Some(thread) }
    }

    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// Starts a job; refused (returns false) while another one runs.
    pub fn start(&mut self, name: &str, job: Job<T>) -> bool {
        if self.busy {
            return false;
        }
        {
            let mut state = self.board.state();
            *state = BoardState { job: Some(name.to_string()), started: Some(Instant::now()), ..Default::default() };
        }
        self.board.cancel.reset();
        let sent = self.jobs.as_ref().is_some_and(|jobs| jobs.send((name.to_string(), job)).is_ok());
        self.busy = sent;
        sent
    }

    /// Asks the running job to stop at its next check.
    pub fn cancel(&self) {
        if self.busy {
            self.board.cancel.cancel();
        }
    }

    /// The outcome of the job that finished since the last call, if any.
    pub fn poll(&mut self) -> Option<(String, Outcome<T>)> {
        let finished = self.outcomes.try_recv().ok()?;
        self.busy = false;
        self.board.state().job = None;
        Some(finished)
    }

    pub fn board(&self) -> BoardState {
        self.board.snapshot()
    }
}

impl<T: Send + 'static> Drop for Worker<T> {
    fn drop(&mut self) {
        self.board.cancel.cancel();
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a job panicked".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait<T: Send + 'static>(worker: &mut Worker<T>) -> (String, Outcome<T>) {
        let start = Instant::now();
        loop {
            if let Some(finished) = worker.poll() {
                return finished;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "job did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn runs_reports_cancels_and_survives_panics() {
        let mut worker: Worker<u32> = Worker::new(|| {});
        assert!(worker.start(
            "count",
            Box::new(|board| {
                board.start_stage("counting", 10);
                board.advance(4);
                Ok(7)
            })
        ));
        let (name, outcome) = wait(&mut worker);
        assert_eq!(name, "count");
        assert!(matches!(outcome, Outcome::Done(7)));
        assert_eq!(worker.board().fraction(), Some(0.4));
        assert!(worker.board().log.iter().any(|line| line.contains("counting")));

        assert!(worker.start(
            "forever",
            Box::new(|board| {
                loop {
                    board.check_cancelled()?;
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        ));
        assert!(!worker.start("second", Box::new(|_| Ok(1))), "one job at a time");
        worker.cancel();
        assert!(matches!(wait(&mut worker).1, Outcome::Cancelled));

        assert!(worker.start("panics", Box::new(|_| panic!("boom"))));
        match wait(&mut worker).1 {
            Outcome::Failed(message) => assert!(message.contains("boom")),
            _ => panic!("a panicking job must fail with its message"),
        }
        // The worker still takes work after a panic, and a new job is not cancelled by the old flag.
        assert!(worker.start("after", Box::new(|board| board.check_cancelled().map(|_| 3))));
        assert!(matches!(wait(&mut worker).1, Outcome::Done(3)));
    }
}
