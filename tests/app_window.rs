//! The real binary in a real window: `diffeoreg` with no command under Xvfb opens the app on
//! the demo case, and a screenshot of the X screen (ImageMagick `import`) shows it drawn.
//! The screenshot is kept at target/app-window.png (the path is printed for CI logs).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Distinct colours in the image and the standard deviation of its grey levels.
fn content(image: &image::RgbImage) -> (usize, f64) {
    let mut colours: Vec<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    let grey: Vec<f64> = image.pixels().map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0).collect();
    let mean = grey.iter().sum::<f64>() / grey.len() as f64;
    let std = (grey.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / grey.len() as f64).sqrt();
    (colours.len(), std)
}

#[test]
fn the_binary_opens_a_window_and_draws_the_demo() {
    let display = ":87";
    let xvfb = Command::new("Xvfb")
        .args([display, "-screen", "0", "1600x1000x24", "-nolisten", "tcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb must be installed (scripts/install-test-tools.sh installs it)");
    let _xvfb = Killed(xvfb);
    std::thread::sleep(Duration::from_secs(2));
    let runtime = tempfile::tempdir().unwrap();
    let app = Command::new(env!("CARGO_BIN_EXE_diffeoreg"))
        .env("DISPLAY", display)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut app = Killed(app);

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("app-window.png");
    let start = Instant::now();
    let mut last = (0, 0.0);
    loop {
        if let Ok(Some(status)) = app.0.try_wait() {
            let mut stderr = String::new();
            use std::io::Read;
            let _ = app.0.stderr.take().map(|mut s| s.read_to_string(&mut stderr));
            panic!("the app exited with {status}: {stderr}");
        }
        let taken = Command::new("import")
            .args(["-display", display, "-window", "root"])
            .arg(&shot)
            .status()
            .expect("ImageMagick's import must be installed");
        if taken.success()
            && let Ok(image) = image::open(&shot)
        {
            // Where the views are (right of the work panel): the demo head in nine views has
            // hundreds of grey levels and strong contrast; an empty panel with a line of text has neither.
            let views = image::imageops::crop_imm(&image.to_rgb8(), 400, 60, 1150, 850).to_image();
            last = content(&views);
            if last.0 > 200 && last.1 > 30.0 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the window never showed the demo (last screenshot: {} colours, grey std {:.1}; {})",
            last.0,
            last.1,
            shot.display()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    println!("app window screenshot: {} ({} colours, grey std {:.1})", shot.display(), last.0, last.1);
}
