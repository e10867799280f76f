//! `qa/report.html` as a person opens it: headless Chromium renders the page, and the
//! screenshot shows the verdict badge in its colour and every figure decoded.

mod common;

use std::process::Command;

use common::{binary, read_json};

/// Pixels of `image` within `tolerance` of `colour`.
fn count(image: &image::RgbImage, colour: [u8; 3], tolerance: i32) -> usize {
    image.pixels().filter(|p| (0..3).all(|c| (p.0[c] as i32 - colour[c] as i32).abs() <= tolerance)).count()
}

#[test]
fn the_qa_record_renders_in_a_browser_with_its_verdict_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = Command::new(binary()).args(["register", "--iterations", "10,5,5", "--out"]).arg(&out).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let page = out.join("qa/report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let report = read_json(&out.join("report.json"));
    // Self-contained: every figure embedded, nothing fetched.
    assert_eq!(html.matches("data:image/png;base64,").count(), 5);
    assert!(!html.contains("src=\"http") && !html.contains("src=\"qa/") && !html.contains("<script"));
    for input in report["inputs"].as_array().unwrap() {
        assert!(html.contains(input["crc32"].as_str().unwrap()), "the inputs' checksums are on the page");
    }
    let status = report["verdict"]["status"].as_str().unwrap().to_uppercase();
    assert!(html.contains(&format!(">{status}</span>")));

    let screenshot = dir.path().join("page.png");
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("a Chromium is installed (Debian chromium; scripts/install-test-tools.sh)");
    let shot = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,7000"])
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(screenshot.exists(), "{browser} wrote no screenshot: {}", String::from_utf8_lossy(&shot.stderr));
    let image = image::open(&screenshot).unwrap().to_rgb8();
    // The verdict badge in its colour (green for ok, amber for a warning, red for failed).
    let badge = match status.as_str() {
        "OK" => [0x1e, 0x8e, 0x3e],
        "WARNING" => [0xc9, 0x8a, 0x00],
        _ => [0xc5, 0x22, 0x1f],
    };
    assert!(count(&image, badge, 3) > 1500, "the verdict badge is drawn");
    // The figures' dark backgrounds: five figures' worth, so each was decoded and laid out.
    let figure_background = count(&image, [24, 24, 28], 0);
    assert!(figure_background > 5 * 40_000, "figures drawn: {figure_background} background pixels");
    // And text: the page is not blank.
    let dark_text = count(&image, [32, 33, 36], 12);
    assert!(dark_text > 5_000, "text drawn: {dark_text} pixels");
}
