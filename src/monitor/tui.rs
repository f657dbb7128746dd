//! The live view: redraw about once a second until `q`, Esc or Ctrl-C.
//! [`drive`] is the loop on any ratatui backend with any key source, so a
//! test runs it on a `TestBackend`; [`run`] puts it on the terminal.

use std::io;
use std::time::Duration;

use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Terminal;

use super::state_files::Sources;

/// How often the view is refreshed when no key is pressed.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Run the live view on the terminal until the user quits.
pub fn run(sources: &Sources) -> io::Result<()> {
    // Restores the terminal on panic too.
    let mut terminal = ratatui::try_init()?;
    let result = drive(&mut terminal, sources, REFRESH, next_key);
    ratatui::try_restore()?;
    result
}

/// Draw a frame from `sources`, wait up to `refresh` for a key from
/// `next_key`, and again, until a key quits.
pub fn drive<B: Backend>(
    terminal: &mut Terminal<B>,
    sources: &Sources,
    refresh: Duration,
    mut next_key: impl FnMut(Duration) -> io::Result<Option<KeyEvent>>,
) -> io::Result<()> {
    loop {
        let model = super::load(sources);
        terminal.draw(|frame| model.render(frame.area(), frame.buffer_mut()))?;
        if let Some(key) = next_key(refresh)? {
            if quits(&key) {
                return Ok(());
            }
        }
    }
}

/// `q`, Esc or Ctrl-C, pressed.
pub fn quits(key: &KeyEvent) -> bool {
    let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
    key.kind == KeyEventKind::Press
        && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
}

/// The terminal's next key within `wait`, if any.
fn next_key(wait: Duration) -> io::Result<Option<KeyEvent>> {
    if event::poll(wait)? {
        if let Event::Key(key) = event::read()? {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;

    #[test]
    fn the_loop_redraws_until_a_quitting_key() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            state_dir: dir.path().join("state"),
            dportage_dir: dir.path().to_path_buf(),
        };
        let mut terminal = Terminal::new(TestBackend::new(80, 20)).unwrap();
        let mut keys = vec![
            KeyEvent::from(KeyCode::Char('q')),
            KeyEvent::from(KeyCode::Char('x')),
        ];
        let mut waits = 0;
        drive(&mut terminal, &sources, Duration::ZERO, |_| {
            waits += 1;
            // One refresh without a key first.
            Ok(if waits == 1 { None } else { keys.pop() })
        })
        .unwrap();
        assert_eq!(waits, 3, "x does not quit, q does");
        let text = super::super::model::buffer_text(terminal.backend().buffer());
        assert!(text.contains("0 jobs running"), "{text}");
        assert!(quits(&KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL
        )));
        assert!(quits(&KeyEvent::from(KeyCode::Esc)));
        assert!(!quits(&KeyEvent::from(KeyCode::Char('c'))));
    }
}
