//! The terminal's side of the full-screen `top`: raw mode and the
//! alternate screen, keys, resize, and the refresh loop. The layout is
//! [`super::view`]'s.
//!
//! Invariant: once [`Terminal::enter`] has returned, the terminal is
//! restored (cursor shown, main screen, cooked mode) on every way out:
//! return, error (the guard's `Drop`), panic (a panic hook restores it
//! before the message is printed, so the message is readable), and
//! SIGINT/SIGTERM/SIGHUP from outside (caught as flags, checked at least
//! every [`SLICE`]).

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event};
use crossterm::{cursor, execute, terminal};
use ratatui::backend::CrosstermBackend;

use super::view::{Action, View};
use super::{Deferred, Frame, Sample, Section, Sort, deadline_after};
use crate::client::Client;
use crate::error::{CtlError, Result};

/// Longest wait for a key before the stop flags are looked at again.
const SLICE: Duration = Duration::from_millis(100);

/// Raw mode, the alternate screen and a ratatui terminal on stdout, all
/// undone on drop.
struct Terminal {
    inner: ratatui::Terminal<CrosstermBackend<Stdout>>,
}

/// Leaves the alternate screen and raw mode. Harmless when they are not
/// on, so the guard and the panic hook may both call it.
fn restore() {
    let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
    let _ = terminal::disable_raw_mode();
}

impl Terminal {
    fn enter() -> io::Result<Terminal> {
        static PANIC_HOOK: Once = Once::new();
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode()?;
        // From here on a failure must undo what was done.
        let entered = execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
            .and_then(|()| ratatui::Terminal::new(CrosstermBackend::new(io::stdout())));
        match entered {
            Ok(inner) => Ok(Terminal { inner }),
            Err(error) => {
                restore();
                Err(error)
            }
        }
    }

    fn draw(&mut self, view: &mut View, frame: &Frame<'_>) -> io::Result<()> {
        self.inner.draw(|canvas| view.draw(canvas, frame)).map(|_| ())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore();
    }
}

fn terminal_error(error: io::Error) -> CtlError {
    CtlError::Local(format!("terminal: {error}"))
}

/// Flags raised by SIGINT, SIGTERM and SIGHUP (in raw mode Ctrl-C is a
/// key, but a signal from `kill` must still restore the terminal).
fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&flag));
    }
    flag
}

/// Runs the full-screen view until q, Esc, Ctrl-C, a signal, or an error
/// that is not the server's reply (those are shown and sampling goes on).
pub fn run(client: &mut Client, interval: Duration, sort: Sort, section: Section) -> Result<()> {
    let stop = stop_flag();
    let mut view = View::new(sort);
    view.set_section(section);
    let mut previous: Option<Sample> = None;
    let mut current = Sample::take_with(client, view.wants_deferred())?;
    let mut terminal = Terminal::enter().map_err(terminal_error)?;
    loop {
        terminal.draw(&mut view, &Frame::new(previous.as_ref(), &current)).map_err(terminal_error)?;
        let deadline = deadline_after(interval);
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() && !view.paused() {
                break;
            }
            let wait = if left.is_zero() { SLICE } else { left.min(SLICE) };
            if !event::poll(wait).map_err(terminal_error)? {
                continue;
            }
            let redraw = match event::read().map_err(terminal_error)? {
                Event::Key(key) => match view.key(key) {
                    Action::Quit => return Ok(()),
                    Action::Redraw => true,
                    Action::Nothing => false,
                },
                Event::Resize(..) => true,
                _ => false,
            };
            if redraw {
                // Just switched to the deferred view: list it now rather
                // than at the next refresh.
                if view.wants_deferred() && current.deferred.is_none() {
                    match Deferred::take(client) {
                        Ok(rows) => current.deferred = Some(rows),
                        Err(CtlError::Server(reply)) => view.set_error(Some(reply)),
                        Err(other) => return Err(other),
                    }
                }
                terminal.draw(&mut view, &Frame::new(previous.as_ref(), &current)).map_err(terminal_error)?;
            }
        }
        match Sample::take_with(client, view.wants_deferred()) {
            Ok(next) => {
                previous = Some(std::mem::replace(&mut current, next));
                view.set_error(None);
            }
            // The server refused this refresh: say so, keep the last
            // frame, try again next interval.
            Err(CtlError::Server(reply)) => view.set_error(Some(reply)),
            Err(other) => return Err(other),
        }
    }
}
