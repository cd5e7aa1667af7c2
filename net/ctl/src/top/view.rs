//! The full-screen `top`'s layout, for a screen of any size: no terminal,
//! no I/O. [`View`] holds what the keys change (order, scroll position,
//! pause, help); [`View::compose`] turns a [`Frame`] into the lines of one
//! screen and [`View::draw`] puts them on a ratatui frame.
//!
//! The layout's rule: a value is shown whole or not at all. Each table
//! measures its columns on every row, then, until the table fits, drops
//! the lowest-priority columns and shortens the one name column (with a
//! visible `…`); numbers are never cut. The RT section (release counts,
//! misses, p99 and largest latency of each RT thread) is given its rows
//! before the thread list, which scrolls in what is left.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget};

use super::{Frame, Section, Size, Sort, SortKey, Usage};
use crate::format::{self, Align};
use crate::tables::{self, Thread};

/// Spaces between two columns.
const GAP: usize = 2;
/// The name column is shortened to this width before any column is
/// dropped; below it only when every droppable column is gone.
const NAME_SOFT_MIN: usize = 12;
/// The name column is never shorter than this (nor than its title).
const NAME_HARD_MIN: usize = 4;
/// Columns of this priority or above go before a name is shortened.
const OPTIONAL: u8 = 4;
/// Rows of the thread list (header included) kept when the RT section
/// would take them, if the screen has them.
const THREAD_ROWS_KEPT: usize = 4;

/// What a key asks of the loop that owns the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Restore the terminal and exit.
    Quit,
    /// Draw again (order, scroll, pause or help changed).
    Redraw,
    /// Nothing to do.
    Nothing,
}

/// The state the keys change.
#[derive(Clone, Debug, Default)]
pub struct View {
    sort: Sort,
    /// Index of the first thread row shown.
    offset: usize,
    /// Thread rows that fitted at the last compose (PgUp/PgDn step).
    page: usize,
    /// Thread rows at the last compose (End, and the offset's bound).
    rows: usize,
    paused: bool,
    help: bool,
    /// What the lower section lists (v / Tab cycles it).
    section: Section,
    /// The last refresh's error reply, shown in the footer until a
    /// refresh succeeds.
    error: Option<String>,
}

impl View {
    /// A view ordered by `sort`, at the top of the list.
    pub fn new(sort: Sort) -> View {
        View { sort, ..View::default() }
    }

    /// The current order.
    #[cfg(test)]
    pub fn sort(&self) -> Sort {
        self.sort
    }

    /// Whether sampling is paused (space).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Index of the first thread row shown.
    #[cfg(test)]
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Shows `section` in the lower part of the screen, from its top.
    pub fn set_section(&mut self, section: Section) {
        self.section = section;
        self.offset = 0;
    }

    /// Whether the deferred-work view is shown, so that samples should
    /// carry the listings.
    pub fn wants_deferred(&self) -> bool {
        self.section == Section::Deferred
    }

    /// Shows `error` in the footer (`None` clears it).
    pub fn set_error(&mut self, error: Option<String>) {
        self.error = error;
    }

    /// Applies one key.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        let control = key.modifiers.contains(KeyModifiers::CONTROL);
        if control && matches!(key.code, KeyCode::Char('c' | 'C')) {
            return Action::Quit;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return match key.code {
                KeyCode::Char('q' | 'Q') => Action::Quit,
                _ => Action::Redraw,
            };
        }
        let page = self.page.max(1);
        match key.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('h' | '?') | KeyCode::F(1) => self.help = true,
            KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Char('v' | 'V') | KeyCode::Tab | KeyCode::BackTab => {
                self.set_section(match self.section {
                    Section::Threads => Section::Deferred,
                    Section::Deferred => Section::Threads,
                });
            }
            KeyCode::Char(letter) => {
                let Some(key) = SortKey::ALL.into_iter().find(|sort| sort.key() == letter.to_ascii_lowercase()) else {
                    return Action::Nothing;
                };
                self.sort = if self.sort.key == key { Sort { key, reversed: !self.sort.reversed } } else { Sort::by(key) };
                self.offset = 0;
            }
            KeyCode::Up => self.offset = self.offset.saturating_sub(1),
            KeyCode::Down => self.offset = self.offset.saturating_add(1),
            KeyCode::PageUp => self.offset = self.offset.saturating_sub(page),
            KeyCode::PageDown => self.offset = self.offset.saturating_add(page),
            KeyCode::Home => self.offset = 0,
            KeyCode::End => self.offset = usize::MAX,
            _ => return Action::Nothing,
        }
        self.clamp();
        Action::Redraw
    }

    /// Keeps the offset where the last page still fills the list.
    fn clamp(&mut self) {
        self.offset = self.offset.min(self.rows.saturating_sub(self.page));
    }

    /// The screen's lines, top to bottom: at most `size.height` lines,
    /// none wider than `size.width`. Records the page size for the keys.
    pub fn compose(&mut self, frame: &Frame<'_>, size: Size) -> Vec<Line<'static>> {
        let width = usize::from(size.width);
        let height = usize::from(size.height);
        let threads = frame.sorted(self.sort);
        let deferred = deferred_rows(frame);
        let listed = match self.section {
            Section::Threads => threads.len(),
            Section::Deferred => deferred.len(),
        };
        let rt = frame.rt_sorted(self.sort);
        let title = title_line(frame, width);
        let softirqs = softirq_line(frame, width);
        // Title, soft IRQs and footer take a line each, the footer first.
        let body = height.saturating_sub(3);
        let rt_wanted = if rt.is_empty() { 0 } else { rt.len() + 1 };
        let kept = THREAD_ROWS_KEPT.min(listed + 1).min(body / 2);
        let rt_height = rt_wanted.min(body.saturating_sub(kept));
        let thread_height = body - rt_height;
        self.rows = listed;
        self.page = thread_height.saturating_sub(1);
        self.clamp();
        let shown_end = (self.offset + self.page).min(listed);
        let mut lines = Vec::with_capacity(height);
        lines.push(title);
        if height >= 3 {
            lines.push(softirqs);
        }
        if thread_height > 0 {
            match self.section {
                Section::Threads => {
                    let visible = threads.get(self.offset..shown_end).unwrap_or(&[]);
                    lines.extend(thread_table(frame, &threads, visible, self.sort, width));
                }
                Section::Deferred => {
                    let visible = deferred.get(self.offset..shown_end).unwrap_or(&[]);
                    lines.extend(deferred_table(&deferred, visible, width));
                }
            }
        }
        if rt_height > 0 {
            let visible = rt.get(..rt_height - 1).unwrap_or(&rt);
            let hidden = rt.len().saturating_sub(visible.len());
            lines.extend(rt_table(frame, &rt, visible, hidden, self.sort, width));
        }
        if height >= 2 {
            // Blank lines down to the footer, which sits on the last line.
            while lines.len() < height - 1 {
                lines.push(Line::default());
            }
            let position = (listed > 0).then(|| format!("{}-{}/{}", (self.offset + 1).min(shown_end), shown_end, listed));
            lines.push(self.footer(position, width));
        }
        lines.truncate(height);
        lines
    }

    /// Draws the frame on the whole of `canvas`, the help over it if asked.
    pub fn draw(&mut self, canvas: &mut ratatui::Frame<'_>, frame: &Frame<'_>) {
        let area = canvas.area();
        self.render(frame, area, canvas.buffer_mut());
    }

    /// Draws into any buffer (what [`View::draw`] and the tests use).
    pub fn render(&mut self, frame: &Frame<'_>, area: Rect, buffer: &mut Buffer) {
        let lines = self.compose(frame, Size { width: area.width, height: area.height });
        Paragraph::new(lines).render(area, buffer);
        if self.help {
            help(area, buffer);
        }
    }

    fn footer(&self, position: Option<String>, width: usize) -> Line<'static> {
        let key_style = Style::new().add_modifier(Modifier::BOLD);
        let mut items = Vec::new();
        if self.paused {
            items.push(Item::new("PAUSED", Style::new().fg(Color::Black).bg(Color::Yellow), 0));
        }
        if let Some(error) = &self.error {
            let room = (width / 2).max(NAME_HARD_MIN);
            items.push(Item::new(&shorten(&format!("error: {error}"), room), Style::new().fg(Color::White).bg(Color::Red), 0));
        }
        items.push(Item::keyed("q", " quit", key_style, 0));
        items.push(Item::keyed("h", " help", key_style, 0));
        let other = match self.section {
            Section::Threads => " deferred",
            Section::Deferred => " threads",
        };
        items.push(Item::keyed("v", other, key_style, 0));
        items.push(Item::new("sort:", Style::new(), 0));
        for key in SortKey::ALL {
            let style = if key == self.sort.key { Style::new().add_modifier(Modifier::REVERSED) } else { Style::new() };
            let mut label = format!(" {}", key.label());
            if key == self.sort.key && self.sort.reversed {
                label.push_str(" (rev)");
            }
            let mut item = Item::keyed(&key.key().to_string(), &label, key_style, 0);
            item.spans = item
                .spans
                .into_iter()
                .map(|span| {
                    let patched = span.style.patch(style);
                    span.style(patched)
                })
                .collect();
            items.push(item);
        }
        if !self.paused {
            items.push(Item::keyed("space", " pause", key_style, 2));
        }
        items.push(Item::new("↑↓ PgUp PgDn Home End", Style::new(), 3));
        if let Some(position) = position {
            items.push(Item::new(&position, Style::new().fg(Color::Cyan), 1));
        }
        fit_items(items, width)
    }
}

/// Renders `frame` through `view` into a `size` buffer and returns its
/// text, trailing spaces trimmed: what `top --once --size` prints.
pub fn render_text(view: &mut View, frame: &Frame<'_>, size: Size) -> String {
    let area = Rect::new(0, 0, size.width, size.height);
    let mut buffer = Buffer::empty(area);
    view.render(frame, area, &mut buffer);
    buffer_text(&buffer)
}

/// A buffer's text, one line per row, trailing spaces trimmed.
pub fn buffer_text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            if let Some(cell) = buffer.cell((x, y)) {
                line.push_str(cell.symbol());
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The help box, centred over `area`.
fn help(area: Rect, buffer: &mut Buffer) {
    let key = Style::new().add_modifier(Modifier::BOLD);
    let entry = |keys: &'static str, what: &'static str| Line::from(vec![Span::styled(format!(" {keys:<14}"), key), Span::raw(what)]);
    let lines = vec![
        entry("c", "sort by CPU share (again: reverse)"),
        entry("m", "sort by deadline misses"),
        entry("l", "sort by release latency (p99)"),
        entry("n", "sort by name"),
        entry("↑ ↓", "scroll the thread list a line"),
        entry("PgUp PgDn", "scroll it a page"),
        entry("Home End", "its top, its end"),
        entry("v Tab", "threads / deferred work (tasklets, timers...)"),
        entry("space", "pause / resume sampling"),
        entry("h ?", "this help (any key closes it)"),
        entry("q Esc Ctrl-C", "quit"),
        Line::default(),
        Line::from(vec![
            Span::raw(" "),
            Span::styled("RT thread", rt_name_style()),
            Span::raw("  "),
            Span::styled("misses", miss_style()),
            Span::raw("  "),
            Span::styled("busy", busy_style()),
            Span::raw("  "),
            Span::styled("running", running_style()),
        ]),
    ];
    let wanted_width = lines.iter().map(Line::width).max().unwrap_or(0) + 3;
    let width = u16::try_from(wanted_width).unwrap_or(u16::MAX).min(area.width);
    let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX).min(area.height);
    let popup = Rect::new(area.x + (area.width - width) / 2, area.y + (area.height - height) / 2, width, height);
    Clear.render(popup, buffer);
    Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" rtctl top: keys ")).render(popup, buffer);
}

fn rt_name_style() -> Style {
    Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)
}

fn miss_style() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}

fn busy_style() -> Style {
    Style::new().fg(Color::Yellow)
}

fn running_style() -> Style {
    Style::new().fg(Color::Green)
}

fn header_style() -> Style {
    Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD)
}

fn rt_header_style() -> Style {
    Style::new().fg(Color::Black).bg(Color::Magenta).add_modifier(Modifier::BOLD)
}

/// The width of `text` on a terminal.
fn width_of(text: &str) -> usize {
    Span::raw(text).width()
}

/// `text` cut to `width` columns with a `…` at the end if it was longer.
fn shorten(text: &str, width: usize) -> String {
    if width_of(text) <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    for character in text.chars() {
        let mut next = out.clone();
        next.push(character);
        if width_of(&next) + 1 > width {
            break;
        }
        out = next;
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// A piece of a one-line bar (title, soft IRQs, footer), dropped whole
/// when the line is too narrow: the highest `priority` number first.
#[derive(Clone, Debug)]
struct Item {
    spans: Vec<Span<'static>>,
    priority: u8,
}

impl Item {
    fn new(text: &str, style: Style, priority: u8) -> Item {
        Item { spans: vec![Span::styled(text.to_owned(), style)], priority }
    }

    /// A key in bold, then what it does.
    fn keyed(key: &str, what: &str, key_style: Style, priority: u8) -> Item {
        Item { spans: vec![Span::styled(key.to_owned(), key_style), Span::raw(what.to_owned())], priority }
    }

    fn width(&self) -> usize {
        self.spans.iter().map(Span::width).sum()
    }
}

/// The items that fit in `width`, `GAP` apart, in their order: drops the
/// highest priority number first (the rightmost among equals).
fn fit(mut items: Vec<Item>, width: usize) -> Vec<Item> {
    while joined_width(&items) > width && !items.is_empty() {
        let drop = items.iter().enumerate().max_by_key(|(index, item)| (item.priority, *index)).map_or(0, |(index, _)| index);
        items.remove(drop);
    }
    items
}

fn joined_width(items: &[Item]) -> usize {
    items.iter().map(Item::width).sum::<usize>() + GAP * items.len().saturating_sub(1)
}

fn join(items: Vec<Item>) -> Line<'static> {
    let mut spans = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            spans.push(Span::raw(" ".repeat(GAP)));
        }
        spans.extend(item.spans);
    }
    Line::from(spans)
}

/// [`fit`], joined into a line.
fn fit_items(items: Vec<Item>, width: usize) -> Line<'static> {
    join(fit(items, width))
}

fn title_line(frame: &Frame<'_>, width: usize) -> Line<'static> {
    let summary = frame.current.info.summary();
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut items = vec![Item::new(&format!("rtedge {}", summary.version.as_deref().unwrap_or("-")), bold, 0)];
    items.push(Item::new(&format!("up {}", summary.uptime()), Style::new(), 0));
    if let Some(cpus) = summary.cpus {
        items.push(Item::new(&format!("{cpus} CPUs"), Style::new(), 2));
    }
    items.push(Item::new(&format!("{} threads", frame.current.threads.len()), Style::new(), 1));
    items.push(Item::new(&format!("heap {}", summary.heap()), Style::new(), 3));
    if let Some(interval) = frame.interval_ns {
        items.push(Item::new(&format!("every {}", format::duration_ns(interval)), Style::new(), 4));
    }
    fit_items(items, width)
}

/// `softirq/s  HI 0  TIMER 2000 ...`: the busy ones are kept first when
/// the line is short; `+N` says how many were left out.
fn softirq_line(frame: &Frame<'_>, width: usize) -> Line<'static> {
    let mut items = vec![Item::new("softirq/s", Style::new().add_modifier(Modifier::BOLD), 0)];
    for (name, rate) in &frame.softirq_rates {
        let busy = rate.is_some_and(|rate| rate >= 0.5);
        let shown = rate.map_or_else(|| "-".into(), |rate| format!("{rate:.0}"));
        let style = if busy { Style::new().fg(Color::Cyan) } else { Style::new() };
        items.push(Item { spans: vec![Span::raw(format!("{name} ")), Span::styled(shown, style)], priority: if busy { 1 } else { 2 } });
    }
    if joined_width(&items) <= width {
        return join(items);
    }
    // Some must go: keep room for `+N` at the end.
    let count = items.len() - 1;
    let reserve = GAP + 1 + count.to_string().len();
    let mut kept = fit(items, width.saturating_sub(reserve));
    let left_out = count + 1 - kept.len();
    kept.push(Item::new(&format!("+{left_out}"), Style::new(), 0));
    fit_items(kept, width)
}

/// One cell: its text and style.
#[derive(Clone, Debug)]
struct Cell {
    text: String,
    style: Style,
}

impl Cell {
    fn plain(text: String) -> Cell {
        Cell { text, style: Style::new() }
    }

    fn styled(text: String, style: Style) -> Cell {
        Cell { text, style }
    }
}

/// A table column: its cells for the rows shown, and how it gives way.
struct Column {
    title: String,
    align: Align,
    /// 0: never dropped; otherwise the highest number goes first, and
    /// from [`OPTIONAL`] up before the name is shortened.
    priority: u8,
    /// The name column, shortened (with `…`) rather than dropped.
    flexible: bool,
    /// The widest cell of every row (not only those shown), so that
    /// scrolling does not make the columns jump.
    natural: usize,
    cells: Vec<Cell>,
}

/// The width of each kept column (the others are removed) so that the
/// table fits `width`.
fn fit_columns(columns: &mut Vec<Column>, width: usize) -> Vec<usize> {
    let mut widths: Vec<usize> = columns.iter().map(|column| column.natural.max(width_of(&column.title))).collect();
    let total = |widths: &[usize]| widths.iter().sum::<usize>() + GAP * widths.len().saturating_sub(1);
    let flexible = |columns: &[Column]| columns.iter().position(|column| column.flexible);
    let shrink_to = |columns: &[Column], widths: &mut [usize], floor: usize, width: usize| {
        if let Some(index) = flexible(columns) {
            let others = total(widths) - widths[index];
            let floor = floor.max(width_of(&columns[index].title)).min(widths[index]);
            widths[index] = width.saturating_sub(others).clamp(floor, widths[index]);
        }
    };
    // 1. Drop the optional columns (priority from OPTIONAL up), least
    //    important first; 2. shorten the name to its soft minimum; 3. drop
    //    the other droppable columns.
    let drop_while_too_wide = |columns: &mut Vec<Column>, widths: &mut Vec<usize>, least: u8| {
        while total(widths) > width {
            let Some(drop) = columns
                .iter()
                .enumerate()
                .filter(|(_, column)| column.priority >= least && !column.flexible)
                .max_by_key(|(index, column)| (column.priority, *index))
                .map(|(index, _)| index)
            else {
                break;
            };
            columns.remove(drop);
            widths.remove(drop);
        }
    };
    drop_while_too_wide(columns, &mut widths, OPTIONAL);
    if total(&widths) > width {
        shrink_to(columns, &mut widths, NAME_SOFT_MIN, width);
    }
    drop_while_too_wide(columns, &mut widths, 1);
    // 3. Shorten the name further, then drop from the right.
    if total(&widths) > width {
        shrink_to(columns, &mut widths, NAME_HARD_MIN, width);
    }
    while total(&widths) > width && columns.len() > 1 {
        let drop = columns.iter().rposition(|column| !column.flexible).unwrap_or(columns.len() - 1);
        columns.remove(drop);
        widths.remove(drop);
    }
    // A lone column that is still too wide is cut to the width (names
    // only: a lone number column is narrower than any usable screen).
    if let [only] = widths.as_mut_slice() {
        *only = (*only).min(width);
    }
    // 4. Give the name back what the dropped columns freed.
    if let Some(index) = flexible(columns) {
        let natural = columns[index].natural.max(width_of(&columns[index].title));
        let others = total(&widths) - widths[index];
        widths[index] = natural.min(width.saturating_sub(others)).max(widths[index]);
    }
    widths
}

fn pad(text: &str, width: usize, align: Align) -> String {
    let text = shorten(text, width);
    let fill = " ".repeat(width.saturating_sub(width_of(&text)));
    match align {
        Align::Left => format!("{text}{fill}"),
        Align::Right => format!("{fill}{text}"),
    }
}

/// The header line and one line per shown row; the header is padded to
/// the full width so that its colour spans the screen.
fn table_lines(mut columns: Vec<Column>, rows: usize, width: usize, header: Style) -> Vec<Line<'static>> {
    let widths = fit_columns(&mut columns, width);
    let mut title = String::new();
    for (index, (column, &column_width)) in columns.iter().zip(&widths).enumerate() {
        if index > 0 {
            title.push_str(&" ".repeat(GAP));
        }
        title.push_str(&pad(&column.title, column_width, column.align));
    }
    let title = pad(&title, width, Align::Left);
    let mut lines = vec![Line::styled(title, header)];
    for row in 0..rows {
        let mut spans = Vec::with_capacity(columns.len() * 2);
        for (index, (column, &column_width)) in columns.iter().zip(&widths).enumerate() {
            if index > 0 {
                spans.push(Span::raw(" ".repeat(GAP)));
            }
            let cell = column.cells.get(row);
            let text = cell.map_or("", |cell| cell.text.as_str());
            let style = cell.map_or_else(Style::new, |cell| cell.style);
            spans.push(Span::styled(pad(text, column_width, column.align), style));
        }
        lines.push(Line::from(spans));
    }
    lines
}

/// Builds a column from a cell function over every row (for the width)
/// and over the rows shown (for the cells).
fn column<T>(title: &str, align: Align, priority: u8, all: &[T], shown: &[T], cell: impl Fn(&T) -> Cell) -> Column {
    let natural = all.iter().map(|usage| width_of(&cell(usage).text)).max().unwrap_or(0);
    Column { title: title.to_owned(), align, priority, flexible: false, natural, cells: shown.iter().map(&cell).collect() }
}

/// `title`, with an arrow when the list is ordered by `key`.
fn sorted_title(title: &str, key: SortKey, sort: Sort) -> String {
    if sort.key != key {
        title.to_owned()
    } else if sort.reversed {
        format!("{title}▲")
    } else {
        format!("{title}▼")
    }
}

fn name_cell(thread: &Thread) -> Cell {
    let style = match thread.kind.as_str() {
        "rt" => rt_name_style(),
        "idle" => Style::new().fg(Color::DarkGray),
        _ => Style::new(),
    };
    Cell::styled(thread.name.clone(), style)
}

fn misses_cell(thread: &Thread) -> Cell {
    let text = tables::number(thread.misses);
    if thread.misses.unwrap_or(0) > 0 { Cell::styled(text, miss_style()) } else { Cell::plain(text) }
}

/// A latency cell, red when it is over the thread's period (that release
/// ran into the next one).
fn latency_cell(thread: &Thread, value: Option<i64>) -> Cell {
    let text = if thread.has_latency() { tables::duration(value) } else { "-".into() };
    match (value, thread.period_ns) {
        (Some(value), Some(period)) if thread.has_latency() && period > 0 && value > period => Cell::styled(text, miss_style()),
        _ => Cell::plain(text),
    }
}

fn thread_table(frame: &Frame<'_>, all: &[&Usage<'_>], shown: &[&Usage<'_>], sort: Sort, width: usize) -> Vec<Line<'static>> {
    let sample = frame.current;
    let mut name = column(&sorted_title("NAME", SortKey::Name, sort), Align::Left, 0, all, shown, |usage| name_cell(usage.thread));
    name.flexible = true;
    let columns = vec![
        column("ID", Align::Right, 4, all, shown, |usage| Cell::plain(tables::number(usage.thread.id))),
        name,
        column("KIND", Align::Left, 3, all, shown, |usage| Cell::plain(usage.thread.kind.clone())),
        column("PRIO/NICE", Align::Right, 2, all, shown, |usage| Cell::plain(usage.thread.priority_or_nice())),
        column("STATE", Align::Left, 1, all, shown, |usage| {
            let state = usage.thread.state.clone();
            if state == "running" { Cell::styled(state, running_style()) } else { Cell::plain(state) }
        }),
        column("CPU", Align::Right, 3, all, shown, |usage| Cell::plain(tables::number(usage.thread.cpu))),
        column(&sorted_title("CPU%", SortKey::Cpu, sort), Align::Right, 0, all, shown, |usage| {
            let text = usage.percent.map_or_else(|| "-".into(), |percent| format!("{percent:.1}"));
            if usage.percent.is_some_and(|percent| percent >= 50.0) { Cell::styled(text, busy_style()) } else { Cell::plain(text) }
        }),
        column("RUNTIME", Align::Right, 1, all, shown, |usage| Cell::plain(tables::duration(usage.thread.runtime_ns))),
        column("SWITCHES", Align::Right, 5, all, shown, |usage| Cell::plain(tables::number(usage.thread.switches))),
        column(&sorted_title("MISSES", SortKey::Misses, sort), Align::Right, 0, all, shown, |usage| misses_cell(usage.thread)),
        column(&sorted_title("LAT-P99", SortKey::Latency, sort), Align::Right, 7, all, shown, |usage| {
            latency_cell(usage.thread, sample.p99(usage.thread))
        }),
        column("AFFINITY", Align::Left, 6, all, shown, |usage| Cell::plain(usage.thread.affinity.clone())),
    ];
    table_lines(columns, shown.len(), width, header_style())
}

fn rt_table(frame: &Frame<'_>, all: &[&Usage<'_>], shown: &[&Usage<'_>], hidden: usize, sort: Sort, width: usize) -> Vec<Line<'static>> {
    let sample = frame.current;
    let title = if hidden > 0 { format!("RT THREAD (+{hidden})") } else { "RT THREAD".to_owned() };
    let mut name = column(&title, Align::Left, 0, all, shown, |usage| name_cell(usage.thread));
    name.flexible = true;
    let columns = vec![
        name,
        column("PRIO", Align::Right, 4, all, shown, |usage| Cell::plain(tables::number(usage.thread.priority))),
        column("PERIOD", Align::Right, 2, all, shown, |usage| Cell::plain(usage.thread.period())),
        column("RELEASES", Align::Right, 0, all, shown, |usage| Cell::plain(tables::number(usage.thread.releases))),
        column(&sorted_title("MISSES", SortKey::Misses, sort), Align::Right, 0, all, shown, |usage| misses_cell(usage.thread)),
        column("LAT-MIN", Align::Right, 5, all, shown, |usage| latency_cell(usage.thread, usage.thread.latency_min_ns)),
        column("LAT-MEAN", Align::Right, 3, all, shown, |usage| latency_cell(usage.thread, usage.thread.latency_mean_ns)),
        column(&sorted_title("LAT-P99", SortKey::Latency, sort), Align::Right, 0, all, shown, |usage| {
            latency_cell(usage.thread, sample.p99(usage.thread))
        }),
        column("LAT-MAX", Align::Right, 0, all, shown, |usage| latency_cell(usage.thread, usage.thread.latency_max_ns)),
    ];
    table_lines(columns, shown.len(), width, rt_header_style())
}

/// One row of the deferred-work view.
#[derive(Clone, Debug, PartialEq)]
struct DeferredRow {
    kind: &'static str,
    name: String,
    state: String,
    runs: Option<i64>,
    queued: Option<i64>,
    /// Per second over the interval (soft IRQs only).
    rate: Option<f64>,
    owner: String,
}

/// The listed tasklets, timers and work queues (each kind in the
/// server's order), then the soft IRQs with their totals and rates.
fn deferred_rows(frame: &Frame<'_>) -> Vec<DeferredRow> {
    let mut rows: Vec<DeferredRow> = frame
        .current
        .deferred
        .iter()
        .flatten()
        .map(|entry| DeferredRow {
            kind: entry.kind,
            name: entry.name.clone(),
            state: entry.state.clone(),
            runs: entry.runs,
            queued: entry.queued,
            rate: None,
            owner: entry.owner.clone(),
        })
        .collect();
    for (name, total) in &frame.current.softirqs {
        let rate = frame.softirq_rates.iter().find(|(rated, _)| rated == name).and_then(|(_, rate)| *rate);
        rows.push(DeferredRow {
            kind: "softirq",
            name: name.clone(),
            state: "-".into(),
            runs: Some(*total),
            queued: None,
            rate,
            owner: "-".into(),
        });
    }
    rows
}

/// The deferred-work table: kind, name, state, runs (fired, done), queued
/// (schedules, items waiting), rate, owner.
fn deferred_table(all: &[DeferredRow], shown: &[DeferredRow], width: usize) -> Vec<Line<'static>> {
    let mut name = column("NAME", Align::Left, 0, all, shown, |row: &DeferredRow| Cell::plain(row.name.clone()));
    name.flexible = true;
    let columns = vec![
        column("KIND", Align::Left, 3, all, shown, |row: &DeferredRow| Cell::plain(row.kind.to_owned())),
        name,
        column("STATE", Align::Left, 2, all, shown, |row: &DeferredRow| {
            let state = row.state.clone();
            if matches!(state.as_str(), "running" | "scheduled" | "armed") {
                Cell::styled(state, running_style())
            } else {
                Cell::plain(state)
            }
        }),
        column("RUNS", Align::Right, 0, all, shown, |row: &DeferredRow| Cell::plain(tables::number(row.runs))),
        column("QUEUED", Align::Right, 1, all, shown, |row: &DeferredRow| Cell::plain(tables::number(row.queued))),
        column("RATE/s", Align::Right, 4, all, shown, |row: &DeferredRow| {
            let text = row.rate.map_or_else(|| "-".into(), |rate| format!("{rate:.0}"));
            if row.rate.is_some_and(|rate| rate >= 0.5) { Cell::styled(text, Style::new().fg(Color::Cyan)) } else { Cell::plain(text) }
        }),
        column("OWNER", Align::Left, 5, all, shown, |row: &DeferredRow| Cell::plain(row.owner.clone())),
    ];
    table_lines(columns, shown.len(), width, header_style())
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::super::replay::{APPLIANCE, Replay};
    use super::super::{Frame, Sample, Size, Sort, SortKey};
    use super::*;

    /// The two samples of the recorded `rtctl top --once` (17 threads, 6
    /// of them RT, 5 of those released; misses on 4).
    fn samples() -> (Sample, Sample) {
        let mut replay = Replay::new(APPLIANCE);
        let first = Sample::take(&mut replay).expect("first sample");
        let second = Sample::take(&mut replay).expect("second sample");
        (first, second)
    }

    const SMALL: Size = Size { width: 80, height: 24 };
    const LARGE: Size = Size { width: 120, height: 40 };

    /// Draws through ratatui's TestBackend, as the terminal would.
    fn draw(view: &mut View, frame: &Frame<'_>, size: Size) -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(size.width, size.height)).expect("test terminal");
        terminal.draw(|canvas| view.draw(canvas, frame)).expect("draw");
        terminal.backend().buffer().clone()
    }

    fn lines(buffer: &Buffer) -> Vec<String> {
        buffer_text(buffer).lines().map(str::to_owned).collect()
    }

    fn press(view: &mut View, code: KeyCode) -> Action {
        view.key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    /// Whether `value` stands whole in `line`: spaces (or the line's ends)
    /// on both sides.
    fn contains_whole(line: &str, value: &str) -> bool {
        line.match_indices(value).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + value.len()..].chars().next();
            before.is_none_or(|c| c == ' ') && after.is_none_or(|c| c == ' ')
        })
    }

    /// The header titles of a table line, sort arrows and the `(+N)` of
    /// the RT title left out.
    fn titles(header: &str) -> Vec<String> {
        header
            .replace("RT THREAD", "RT-THREAD")
            .split_whitespace()
            .filter(|word| !word.starts_with("(+"))
            .map(|word| word.trim_end_matches(['▼', '▲']).to_owned())
            .collect()
    }

    /// What a thread shows under `title`, computed here independently
    /// of the view's cells.
    fn expected(frame: &Frame<'_>, thread: &Thread, title: &str) -> String {
        let usage = frame.usage.iter().find(|usage| usage.thread.id == thread.id).expect("thread in frame");
        let latency = |value: Option<i64>| {
            if thread.has_latency() { tables::duration(value) } else { "-".into() }
        };
        match title {
            "ID" => tables::number(thread.id),
            "NAME" | "RT-THREAD" => thread.name.clone(),
            "KIND" => thread.kind.clone(),
            "PRIO/NICE" => thread.priority_or_nice(),
            "PRIO" => tables::number(thread.priority),
            "STATE" => thread.state.clone(),
            "CPU" => tables::number(thread.cpu),
            "CPU%" => usage.percent.map_or_else(|| "-".into(), |percent| format!("{percent:.1}")),
            "RUNTIME" => tables::duration(thread.runtime_ns),
            "SWITCHES" => tables::number(thread.switches),
            "MISSES" => tables::number(thread.misses),
            "PERIOD" => thread.period(),
            "RELEASES" => tables::number(thread.releases),
            "LAT-MIN" => latency(thread.latency_min_ns),
            "LAT-MEAN" => latency(thread.latency_mean_ns),
            "LAT-P99" => latency(frame.current.p99(thread)),
            "LAT-MAX" => latency(thread.latency_max_ns),
            "AFFINITY" => thread.affinity.clone(),
            other => panic!("unknown column {other}"),
        }
    }

    /// The thread a table row shows: by its name, or by the start of a
    /// name shortened with `…`.
    fn thread_of<'t>(frame: &'t Frame<'_>, line: &str, name_first: bool) -> &'t Thread {
        let words: Vec<&str> = line.split_whitespace().collect();
        let word = if name_first { words[0] } else { words[1] };
        let matches: Vec<&Thread> = frame
            .current
            .threads
            .iter()
            .filter(|thread| match word.strip_suffix('…') {
                Some(start) => thread.name.starts_with(start),
                None => thread.name == word,
            })
            .collect();
        assert_eq!(matches.len(), 1, "one thread for row {line:?}");
        matches[0]
    }

    /// The lines of the table whose header starts with `header_start`:
    /// the header, then its rows (up to a blank line, another header or
    /// the footer).
    fn table<'l>(lines: &'l [String], header_start: &str) -> (&'l str, Vec<&'l str>) {
        let at = lines
            .iter()
            .position(|line| line.trim_start().starts_with(header_start))
            .unwrap_or_else(|| panic!("no table starting {header_start:?} in\n{}", lines.join("\n")));
        let rows = lines[at + 1..lines.len() - 1]
            .iter()
            .take_while(|line| !line.is_empty() && !line.starts_with("RT THREAD") && !line.starts_with("NAME"))
            .map(String::as_str)
            .collect();
        (&lines[at], rows)
    }

    /// Every cell of every row of both tables is its whole value.
    fn assert_values_whole(frame: &Frame<'_>, lines: &[String]) {
        let thread_header = if lines[2].trim_start().starts_with("ID") { "ID" } else { "NAME" };
        for (start, name_first) in [(thread_header, thread_header == "NAME"), ("RT THREAD", true)] {
            let (header, rows) = table(lines, start);
            let titles = titles(header);
            assert!(!rows.is_empty(), "table {start} has rows");
            for row in rows {
                let thread = thread_of(frame, row, name_first);
                for title in &titles {
                    let value = expected(frame, thread, title);
                    let shortened = (title == "NAME" || title == "RT-THREAD") && row.split_whitespace().any(|word| word.ends_with('…'));
                    if !shortened {
                        assert!(contains_whole(row, &value), "{title} of {} should be {value:?} whole in {row:?}", thread.name);
                    }
                }
            }
        }
    }

    #[test]
    fn at_80x24_the_rt_section_shows_every_rt_thread_whole() {
        let (first, second) = samples();
        let frame = Frame::new(Some(&first), &second);
        let buffer = draw(&mut View::default(), &frame, SMALL);
        let lines = lines(&buffer);
        let (header, rows) = table(&lines, "RT THREAD");
        let titles = titles(header);
        for needed in ["RELEASES", "MISSES", "LAT-P99", "LAT-MAX"] {
            assert!(titles.iter().any(|title| title == needed), "{needed} in {header:?}");
        }
        let rt: Vec<&Thread> = second.threads.iter().filter(|thread| thread.is_rt()).collect();
        assert_eq!(rt.len(), 6);
        assert_eq!(rows.len(), rt.len(), "{}", lines.join("\n"));
        for thread in rt {
            let row = rows
                .iter()
                .find(|row| row.split_whitespace().next() == Some(thread.name.as_str()))
                .unwrap_or_else(|| panic!("{} in the RT section", thread.name));
            for title in ["RELEASES", "MISSES", "LAT-P99", "LAT-MAX"] {
                let value = expected(&frame, thread, title);
                assert!(contains_whole(row, &value), "{title} {value:?} in {row:?}");
            }
        }
        // Measured p99 figures came from the recorded LATENCY replies.
        assert_eq!(second.p99_ns.len(), 5);
    }

    #[test]
    fn no_line_is_wider_than_the_screen_at_any_size() {
        let (first, second) = samples();
        let frame = Frame::new(Some(&first), &second);
        let mut sizes = vec![SMALL, LARGE];
        for width in (1..=200).step_by(7) {
            for height in [1, 2, 3, 5, 8, 24, 50] {
                sizes.push(Size { width, height });
            }
        }
        for size in sizes {
            for key in SortKey::ALL {
                let mut view = View::new(Sort::by(key));
                let composed = view.compose(&frame, size);
                assert!(composed.len() <= usize::from(size.height), "{size:?}: {} lines", composed.len());
                for line in &composed {
                    assert!(line.width() <= usize::from(size.width), "{size:?}: {} columns in {line}", line.width());
                }
            }
        }
    }

    #[test]
    fn values_are_whole_at_80x24_and_120x40() {
        let (first, second) = samples();
        let frame = Frame::new(Some(&first), &second);
        for size in [SMALL, LARGE] {
            for key in SortKey::ALL {
                let buffer = draw(&mut View::new(Sort::by(key)), &frame, size);
                let lines = lines(&buffer);
                assert_eq!(lines.len(), usize::from(size.height));
                assert_values_whole(&frame, &lines);
            }
        }
        // 80 columns drop low-priority columns; 120 have room for them.
        let small = lines(&draw(&mut View::default(), &frame, SMALL));
        let large = lines(&draw(&mut View::default(), &frame, LARGE));
        assert!(!titles(&small[2]).contains(&"SWITCHES".to_owned()), "{}", small[2]);
        assert!(titles(&large[2]).contains(&"SWITCHES".to_owned()), "{}", large[2]);
        assert!(titles(&large[2]).contains(&"ID".to_owned()), "{}", large[2]);
    }

    /// The names of the thread list's rows, top to bottom.
    fn thread_rows(frame: &Frame<'_>, view: &mut View, size: Size) -> Vec<String> {
        let lines = lines(&draw(view, frame, size));
        let name_first = !lines[2].trim_start().starts_with("ID");
        let (_, rows) = table(&lines, lines[2].trim_start().split(' ').next().unwrap_or("-"));
        rows.iter().map(|row| thread_of(frame, row, name_first).name.clone()).collect()
    }

    fn rt_rows(frame: &Frame<'_>, view: &mut View, size: Size) -> Vec<String> {
        let lines = lines(&draw(view, frame, size));
        let (_, rows) = table(&lines, "RT THREAD");
        rows.iter().map(|row| thread_of(frame, row, true).name.clone()).collect()
    }

    #[test]
    fn sort_keys_reorder_the_rows() {
        let (first, second) = samples();
        let frame = Frame::new(Some(&first), &second);
        let mut view = View::default();
        let by_cpu = thread_rows(&frame, &mut view, LARGE);
        assert_eq!(by_cpu.len(), 17);
        assert_eq!(&by_cpu[..2], ["idle/1", "idle/0"]);

        assert_eq!(press(&mut view, KeyCode::Char('n')), Action::Redraw);
        let by_name = thread_rows(&frame, &mut view, LARGE);
        let mut names = by_name.clone();
        names.sort();
        assert_eq!(by_name, names);
        assert_ne!(by_name, by_cpu);
        // Pressed again: reversed.
        press(&mut view, KeyCode::Char('n'));
        let reversed = thread_rows(&frame, &mut view, LARGE);
        names.reverse();
        assert_eq!(reversed, names);

        press(&mut view, KeyCode::Char('m'));
        let by_misses = thread_rows(&frame, &mut view, LARGE);
        let misses =
            |name: &String| second.threads.iter().find(|thread| &thread.name == name).and_then(|thread| thread.misses).unwrap_or(0);
        let counts: Vec<i64> = by_misses.iter().map(misses).collect();
        assert!(counts.windows(2).all(|pair| pair[0] >= pair[1]), "{counts:?}");
        assert_eq!(by_misses[0], "softirq-rt");

        // The RT section follows the order too: by p99, the largest first.
        press(&mut view, KeyCode::Char('l'));
        let by_latency = rt_rows(&frame, &mut view, SMALL);
        let p99: Vec<i64> = by_latency
            .iter()
            .map(|name| second.threads.iter().find(|thread| &thread.name == name).and_then(|thread| second.p99(thread)).unwrap_or(-1))
            .collect();
        assert!(p99.windows(2).all(|pair| pair[0] >= pair[1]), "{by_latency:?} {p99:?}");
        assert_eq!(by_latency.last().map(String::as_str), Some("rt-sleeper"));
        let mut by_name = by_latency.clone();
        by_name.sort();
        assert_ne!(by_latency, by_name);
    }

    #[test]
    fn scrolling_moves_the_window_and_stops_at_the_ends() {
        let (first, second) = samples();
        let frame = Frame::new(Some(&first), &second);
        let all = thread_rows(&frame, &mut View::default(), LARGE);
        let mut view = View::default();
        let top = thread_rows(&frame, &mut view, SMALL);
        let page = top.len();
        assert!(page > 3 && page < all.len(), "80x24 shows {page} of {}", all.len());
        assert_eq!(top, all[..page]);

        press(&mut view, KeyCode::Down);
        assert_eq!(thread_rows(&frame, &mut view, SMALL), all[1..=page]);
        press(&mut view, KeyCode::Up);
        press(&mut view, KeyCode::Up);
        assert_eq!(thread_rows(&frame, &mut view, SMALL), all[..page]);

        press(&mut view, KeyCode::PageDown);
        let end = all.len() - page;
        assert_eq!(view.offset(), end.min(page));
        assert_eq!(thread_rows(&frame, &mut view, SMALL), all[end.min(page)..end.min(page) + page]);

        press(&mut view, KeyCode::End);
        let last = thread_rows(&frame, &mut view, SMALL);
        assert_eq!(last, all[end..]);
        let footer = lines(&draw(&mut view, &frame, SMALL)).pop().unwrap_or_default();
        assert!(footer.ends_with(&format!("{}-{}/{}", end + 1, all.len(), all.len())), "{footer}");
        press(&mut view, KeyCode::Down);
        assert_eq!(thread_rows(&frame, &mut view, SMALL), all[end..], "no scrolling past the end");

        press(&mut view, KeyCode::PageUp);
        assert_eq!(view.offset(), end.saturating_sub(page));
        press(&mut view, KeyCode::Home);
        assert_eq!(thread_rows(&frame, &mut view, SMALL), all[..page]);
    }

    #[test]
    fn rt_threads_misses_and_errors_are_coloured() {
        let (first, second) = samples();
        let frame = Frame::new(Some(&first), &second);
        let mut view = View::default();
        view.set_error(Some("ERR busy".into()));
        let buffer = draw(&mut view, &frame, SMALL);
        let lines = lines(&buffer);
        let cell_at = |line: usize, text: &str| {
            let column = lines[line].find(text).expect("text on line");
            let x = u16::try_from(lines[line][..column].chars().count()).unwrap_or(0);
            let y = u16::try_from(line).unwrap_or(0);
            buffer.cell((x, y)).expect("cell").clone()
        };
        let rt_row = lines.iter().position(|line| line.starts_with("softirq-rt")).expect("softirq-rt in the RT section");
        assert_eq!(cell_at(rt_row, "softirq-rt").fg, Color::Magenta);
        let misses = tables::number(second.threads.iter().find(|thread| thread.name == "softirq-rt").and_then(|thread| thread.misses));
        assert_eq!(cell_at(rt_row, &misses).fg, Color::Red);
        let idle_row = lines.iter().position(|line| line.starts_with("idle/0")).expect("idle/0 row");
        assert_eq!(cell_at(idle_row, "idle/0").fg, Color::DarkGray);
        let footer = lines.len() - 1;
        assert!(lines[footer].starts_with("error: ERR busy"), "{}", lines[footer]);
        assert_eq!(cell_at(footer, "error").bg, Color::Red);
    }

    #[test]
    fn keys_pause_help_and_quit() {
        let (first, second) = samples();
        let frame = Frame::new(Some(&first), &second);
        let mut view = View::default();
        assert_eq!(press(&mut view, KeyCode::Char(' ')), Action::Redraw);
        assert!(view.paused());
        let text = render_text(&mut view, &frame, SMALL);
        assert!(text.lines().last().is_some_and(|line| line.starts_with("PAUSED")), "{text}");
        press(&mut view, KeyCode::Char(' '));
        assert!(!view.paused());

        assert_eq!(press(&mut view, KeyCode::Char('?')), Action::Redraw);
        let text = render_text(&mut view, &frame, SMALL);
        assert!(text.contains("sort by deadline misses"), "{text}");
        // Any key closes the help, and only closes it.
        assert_eq!(press(&mut view, KeyCode::Char('m')), Action::Redraw);
        assert_eq!(view.sort(), Sort::default());
        assert!(!render_text(&mut view, &frame, SMALL).contains("deadline misses"));

        assert_eq!(press(&mut view, KeyCode::Char('x')), Action::Nothing);
        assert_eq!(press(&mut view, KeyCode::Char('q')), Action::Quit);
        assert_eq!(press(&mut view, KeyCode::Esc), Action::Quit);
        assert_eq!(view.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
        // Ctrl-C quits from the help too.
        press(&mut view, KeyCode::Char('h'));
        assert_eq!(view.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
    }

    #[test]
    fn the_text_frame_is_the_buffer_without_trailing_spaces() {
        let (first, second) = samples();
        let frame = Frame::new(Some(&first), &second);
        let text = render_text(&mut View::default(), &frame, SMALL);
        let buffer = draw(&mut View::default(), &frame, SMALL);
        assert_eq!(text, buffer_text(&buffer));
        assert_eq!(text.lines().count(), 24);
        assert!(text.lines().all(|line| line == line.trim_end()));
        assert!(text.lines().all(|line| Span::raw(line).width() <= 80));
    }

    #[test]
    fn names_are_shortened_with_a_mark_only_when_nothing_else_can_go() {
        let mut columns = vec![
            Column { title: "NAME".into(), align: Align::Left, priority: 0, flexible: true, natural: 30, cells: Vec::new() },
            Column { title: "ID".into(), align: Align::Right, priority: 4, flexible: false, natural: 2, cells: Vec::new() },
            Column { title: "MISSES".into(), align: Align::Right, priority: 0, flexible: false, natural: 6, cells: Vec::new() },
        ];
        // 30 + 2 + 6 + 2 gaps: the optional ID goes first, then the name
        // gives way, never MISSES.
        let widths = fit_columns(&mut columns, 36);
        let titles: Vec<&str> = columns.iter().map(|column| column.title.as_str()).collect();
        assert_eq!(titles, ["NAME", "MISSES"]);
        assert_eq!(widths, [28, 6]);
        assert_eq!(shorten("tasklet-disable-rt", 8), "tasklet…");
        assert_eq!(pad("tasklet-disable-rt", 8, Align::Left), "tasklet…");
    }

    #[test]
    fn sizes_parse_as_columns_x_rows() {
        assert_eq!("80x24".parse::<Size>(), Ok(SMALL));
        assert_eq!("120X40".parse::<Size>(), Ok(LARGE));
        assert!("80".parse::<Size>().is_err());
        assert!("0x24".parse::<Size>().is_err());
        assert!("80x100000".parse::<Size>().is_err());
        assert!("axb".parse::<Size>().is_err());
    }

    fn value_map(fields: Vec<(&str, rtedge_proto::Value)>) -> rtedge_proto::Value {
        rtedge_proto::Value::Map(fields.into_iter().map(|(key, value)| (text_value(key), value)).collect())
    }

    fn text_value(text: &str) -> rtedge_proto::Value {
        rtedge_proto::Value::Bulk(text.as_bytes().to_vec())
    }

    fn int(value: i64) -> rtedge_proto::Value {
        rtedge_proto::Value::Integer(value)
    }

    /// The listings as an appliance with deferred work answers them (the
    /// fields of `tests/support`'s fake server, longer names added).
    fn listings() -> Replay {
        let tasklet = |name: &str, state: &str, schedules: i64, runs: i64| {
            value_map(vec![
                ("name", text_value(name)),
                ("state", text_value(state)),
                ("disabled", int(0)),
                ("schedules", int(schedules)),
                ("runs", int(runs)),
                ("owner", text_value("tasklet")),
            ])
        };
        let timer = |name: &str, armed: i64, fired: i64| {
            value_map(vec![
                ("name", text_value(name)),
                ("armed", int(armed)),
                ("expires_in_ms", int(250)),
                ("period_ms", int(1000)),
                ("fired", int(fired)),
                ("owner", text_value("-")),
            ])
        };
        let queue = |name: &str, queued: i64, running: i64, done: i64| {
            value_map(vec![
                ("name", text_value(name)),
                ("workers", int(1)),
                ("queued", int(queued)),
                ("running", int(running)),
                ("done", int(done)),
                ("flags", text_value("single-thread")),
                ("owner", text_value("job")),
            ])
        };
        Replay::from(vec![
            (
                "TASKLETS",
                rtedge_proto::Value::Array(vec![
                    tasklet("tasklet", "scheduled", 21, 20),
                    tasklet("net-rx-refill-tasklet", "idle", 123_456_789, 123_456_789),
                ]),
            ),
            ("TIMERS", rtedge_proto::Value::Array(vec![timer("heartbeat", 1, 61), timer("watchdog-kick", 0, 9_876_543_210)])),
            ("WORKQUEUES", rtedge_proto::Value::Array(vec![queue("jobs", 2, 1, 7), queue("storage-flush-writeback", 0, 0, 4_000_000_000)])),
        ])
    }

    /// The recorded frame's second sample with `deferred` as its listings.
    fn with_deferred(deferred: Vec<super::super::Deferred>) -> (Sample, Sample) {
        let (first, mut second) = samples();
        second.deferred = Some(deferred);
        (first, second)
    }

    #[test]
    fn the_deferred_view_shows_every_listing_whole_and_keeps_the_rt_section() {
        let deferred = super::super::Deferred::take(&mut listings()).expect("listings");
        assert_eq!(deferred.len(), 6);
        let (first, second) = with_deferred(deferred.clone());
        let frame = Frame::new(Some(&first), &second);
        for size in [SMALL, LARGE] {
            let mut view = View::default();
            view.set_section(Section::Deferred);
            let buffer = draw(&mut view, &frame, size);
            let text = buffer_text(&buffer);
            if size == SMALL {
                println!("{text}");
            }
            let lines = lines(&buffer);
            for line in &lines {
                assert!(width_of(line) <= usize::from(size.width), "{line:?} wider than {}", size.width);
            }
            let (header, rows) = table(&lines, "KIND");
            for title in ["KIND", "NAME", "RUNS"] {
                assert!(titles(header).iter().any(|t| t == title), "{title} in {header:?}");
            }
            // The listings come first: all of them fit even at 80x24;
            // the soft IRQs below them scroll (End shows the last page).
            assert!(rows.len() >= deferred.len(), "{text}");
            press(&mut view, KeyCode::End);
            let last_page = buffer_text(&draw(&mut view, &frame, size));
            let last_page: Vec<String> = last_page.lines().map(str::to_owned).collect();
            let (_, last_rows) = table(&last_page, "KIND");
            let rows: Vec<&str> = rows.into_iter().chain(last_rows).collect();
            for entry in &deferred {
                let row =
                    rows.iter().find(|row| contains_whole(row, &entry.name)).unwrap_or_else(|| panic!("{} whole in\n{text}", entry.name));
                assert!(contains_whole(row, entry.kind), "{row:?}");
                assert!(contains_whole(row, &tables::number(entry.runs)), "{row:?}");
            }
            for (name, total) in &second.softirqs {
                assert!(
                    rows.iter().any(|row| contains_whole(row, name) && contains_whole(row, &total.to_string())),
                    "soft IRQ {name} {total} in\n{text}"
                );
            }
            // The RT section is still there, every RT thread whole.
            let (_, rt) = table(&lines, "RT THREAD");
            assert_eq!(rt.len(), frame.rt_sorted(Sort::default()).len(), "{text}");
            assert!(lines[lines.len() - 1].contains("v threads"), "{text}");
        }
    }

    #[test]
    fn v_and_tab_switch_between_threads_and_deferred_work() {
        let (first, second) = with_deferred(super::super::Deferred::take(&mut listings()).expect("listings"));
        let frame = Frame::new(Some(&first), &second);
        let mut view = View::default();
        assert!(!view.wants_deferred());
        let before = lines(&draw(&mut view, &frame, SMALL));
        assert!(!before[2].starts_with("KIND"), "{before:?}");
        assert!(before.iter().any(|line| contains_whole(line, "control-plane")));
        assert!(before[before.len() - 1].contains("v deferred"));
        assert_eq!(press(&mut view, KeyCode::Char('v')), Action::Redraw);
        assert!(view.wants_deferred());
        let after = lines(&draw(&mut view, &frame, SMALL));
        assert!(after[2].starts_with("KIND"), "{after:?}");
        assert!(after.iter().any(|line| contains_whole(line, "net-rx-refill-tasklet")));
        assert_eq!(press(&mut view, KeyCode::Tab), Action::Redraw);
        assert!(!view.wants_deferred());
        assert_eq!(lines(&draw(&mut view, &frame, SMALL)), before);
        // The help names the key.
        press(&mut view, KeyCode::Char('h'));
        let help = buffer_text(&draw(&mut view, &frame, SMALL));
        assert!(help.contains("v Tab"), "{help}");
    }

    #[test]
    fn an_appliance_without_the_listings_still_renders_the_deferred_view() {
        let unknown = |command: &str| rtedge_proto::Value::Error(format!("ERR unknown command '{command}'").into_bytes());
        let mut old =
            Replay::from(vec![("TASKLETS", unknown("TASKLETS")), ("TIMERS", unknown("TIMERS")), ("WORKQUEUES", unknown("WORKQUEUES"))]);
        let deferred = super::super::Deferred::take(&mut old).expect("refusals are left out");
        assert!(deferred.is_empty());
        let (first, second) = with_deferred(deferred);
        let frame = Frame::new(Some(&first), &second);
        let mut view = View::default();
        view.set_section(Section::Deferred);
        let shown = lines(&draw(&mut view, &frame, SMALL));
        let (_, rows) = table(&shown, "KIND");
        assert_eq!(rows.len(), second.softirqs.len(), "{shown:?}");
        assert!(rows.iter().all(|row| row.starts_with("softirq")));
        table(&shown, "RT THREAD");
        // Not sampled yet (just switched): the soft IRQs still show.
        let (first, second) = samples();
        let frame = Frame::new(Some(&first), &second);
        let shown = lines(&draw(&mut view, &frame, SMALL));
        assert_eq!(table(&shown, "KIND").1.len(), second.softirqs.len());
    }

    #[test]
    fn the_deferred_view_fits_any_size_and_never_cuts_a_number() {
        let (first, second) = with_deferred(super::super::Deferred::take(&mut listings()).expect("listings"));
        let frame = Frame::new(Some(&first), &second);
        let mut saw_runs = false;
        for width in (1..=200).step_by(3) {
            for height in [1, 3, 8, 24] {
                let size = Size { width, height };
                let mut view = View::default();
                view.set_section(Section::Deferred);
                let composed = view.compose(&frame, size);
                assert!(composed.len() <= usize::from(height), "{size:?}");
                for line in &composed {
                    assert!(line.width() <= usize::from(width), "{size:?}: {line}");
                }
                let text = buffer_text(&draw(&mut view, &frame, size));
                for word in text.split_whitespace() {
                    assert!(
                        !(word.ends_with('…') && word.starts_with(|c: char| c.is_ascii_digit())),
                        "{size:?}: a number cut to {word:?} in\n{text}"
                    );
                }
                // At 24 rows every listing is shown: where RUNS is, the
                // widest count is there whole.
                if height == 24 && text.lines().any(|line| line.starts_with("KIND") && line.contains("RUNS")) {
                    saw_runs = true;
                    assert!(text.contains("9876543210"), "{size:?}:\n{text}");
                }
            }
        }
        assert!(saw_runs);
    }
}
