//! The bench's results drawn as a PNG: one horizontal bar per measurement,
//! grouped as in the table, on a logarithmic rows-per-second axis (the sequential worker
//! baseline and tranche differ by orders of magnitude), coloured by kind.
//! Text is drawn with an 8x8 bitmap font so no font files are needed.

use std::path::Path;

use font8x8::UnicodeFonts;

use super::report::{BenchReport, Kind};
use super::BenchError;

const WIDTH: u32 = 1200;
const LABEL_W: u32 = 330;
const BAR_H: u32 = 18;
const ROW_H: u32 = 24;
const GROUP_H: u32 = 30;
const MARGIN: u32 = 16;
const BACKGROUND: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [30, 30, 30];
const GRID: [u8; 3] = [225, 225, 225];

fn colour(kind: Kind) -> [u8; 3] {
    match kind {
        Kind::Limit => [150, 150, 150],
        Kind::Baseline => [214, 96, 77],
        Kind::Tranche => [49, 112, 186],
        Kind::Peer => [230, 159, 0],
    }
}

/// An RGB canvas.
struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        let mut pixels = Vec::with_capacity((width * height * 3) as usize);
        for _ in 0..width * height {
            pixels.extend_from_slice(&BACKGROUND);
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    fn rect(&mut self, x: u32, y: u32, w: u32, h: u32, rgb: [u8; 3]) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                let i = ((yy * self.width + xx) * 3) as usize;
                self.pixels[i..i + 3].copy_from_slice(&rgb);
            }
        }
    }

    /// `text` at `(x, y)` (its top left), each glyph `scale` pixels per
    /// font pixel; characters the font lacks are drawn as `?`.
    fn text(&mut self, x: u32, y: u32, text: &str, scale: u32, rgb: [u8; 3]) {
        for (n, c) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS
                .get(c)
                .or_else(|| font8x8::BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            let gx = x + n as u32 * 8 * scale;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.rect(gx + col * scale, y + row as u32 * scale, scale, scale, rgb);
                    }
                }
            }
        }
    }

    fn write(&self, path: &Path) -> Result<(), BenchError> {
        let file = std::fs::File::create(path)
            .map_err(|e| BenchError::step(&format!("writing {}", path.display()), e))?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| BenchError::step("encoding the chart", e))?;
        writer
            .write_image_data(&self.pixels)
            .map_err(|e| BenchError::step("encoding the chart", e))
    }
}

/// Draws `report`'s rates into a PNG at `path`.
pub(crate) fn draw(report: &BenchReport, title: &str, path: &Path) -> Result<(), BenchError> {
    let mut groups: Vec<&str> = Vec::new();
    for m in &report.measurements {
        if !groups.contains(&m.group.as_str()) {
            groups.push(&m.group);
        }
    }
    let top = MARGIN + 48;
    let height = top
        + groups.len() as u32 * GROUP_H
        + report.measurements.len() as u32 * ROW_H
        + 40
        + MARGIN;
    let mut c = Canvas::new(WIDTH, height);
    c.text(MARGIN, MARGIN, title, 2, INK);
    let legend = [
        ("limit", Kind::Limit),
        ("baseline", Kind::Baseline),
        ("peer", Kind::Peer),
        ("tranche", Kind::Tranche),
    ];
    let mut lx = MARGIN;
    for (label, kind) in legend {
        c.rect(lx, MARGIN + 24, 12, 12, colour(kind));
        c.text(lx + 18, MARGIN + 26, label, 1, INK);
        lx += 40 + label.len() as u32 * 8;
    }
    c.text(lx + 20, MARGIN + 26, "rows/s, log scale", 1, INK);

    // The axis spans whole decades around every rate.
    let rates = report.measurements.iter().map(|m| m.rows_per_s.max(1.0));
    let lo = rates.clone().fold(f64::MAX, f64::min).log10().floor();
    let hi = rates.fold(1.0, f64::max).log10().ceil().max(lo + 1.0);
    let plot_x = MARGIN + LABEL_W;
    let plot_w = WIDTH - plot_x - MARGIN - 110;
    let x_of =
        |rate: f64| plot_x + ((rate.max(1.0).log10() - lo) / (hi - lo) * plot_w as f64) as u32;
    let bottom = height - MARGIN - 40;
    let mut decade = lo;
    while decade <= hi {
        let x = x_of(10f64.powf(decade));
        c.rect(x, top, 1, bottom - top, GRID);
        let label = format!("{}", 10f64.powf(decade) as u64);
        c.text(
            x.saturating_sub(label.len() as u32 * 4),
            bottom + 6,
            &label,
            1,
            INK,
        );
        decade += 1.0;
    }

    let mut y = top;
    for group in groups {
        c.text(MARGIN, y + 10, group, 1, INK);
        c.rect(MARGIN, y + 22, WIDTH - 2 * MARGIN, 1, GRID);
        y += GROUP_H;
        for m in report.measurements.iter().filter(|m| m.group == group) {
            c.text(MARGIN + 12, y + 5, &m.name, 1, INK);
            let end = x_of(m.rows_per_s);
            c.rect(
                plot_x,
                y,
                end.saturating_sub(plot_x).max(1),
                BAR_H,
                colour(m.kind),
            );
            let value = format!(
                "{:.0}{}",
                m.rows_per_s,
                if m.projected { " (projected)" } else { "" }
            );
            c.text(end + 6, y + 5, &value, 1, INK);
            y += ROW_H;
        }
    }
    c.write(path)
}

#[cfg(test)]
mod tests {
    use super::super::report::Measurement;
    use super::*;

    #[test]
    fn draws_a_png_with_one_bar_per_measurement() {
        let report = BenchReport {
            measurements: vec![
                Measurement::new("read", "walk", Kind::Limit, 1000, 1000, 0.01),
                Measurement::new("read", "s1", Kind::Baseline, 1000, 10, 1.0),
                Measurement::new("read", "tranche", Kind::Tranche, 1000, 1000, 0.02),
            ],
            ..BenchReport::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        draw(&report, "test", &path).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!(info.width, WIDTH);
        // Title, legend, one group header, three bars, the axis.
        assert_eq!(info.height, MARGIN + 48 + GROUP_H + 3 * ROW_H + 40 + MARGIN);
    }
}
