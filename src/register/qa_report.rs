//! `qa/report.html`: the registration's record on one self-contained page (figures embedded),
//! in the spirit of AAPM TG-132's documentation of a registration: what was registered (files
//! and checksums), how (method and every parameter), whether it can be used (the verdict and
//! its reasons), how well (the metrics both ways beside the rigid start, the deformation's
//! quality), how long each stage took, what was written, every figure, and room to sign.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::metrics::evaluation::{DirectionMetrics, Evaluation};
use crate::metrics::verdict::Status;
use crate::register::pipeline::Report;

/// What each figure shows, by file name.
const CAPTIONS: [(&str, &str); 6] = [
    ("slices.png", "Mid slices of the fixed image, the moving image warped onto it, and their difference."),
    ("checkerboard.png", "Fixed and warped moving image in alternating squares: edges should continue across squares."),
    ("tissues.png", "Overlap of each tissue class in the fixed image and the warped moving image, with its Dice."),
    (
        "jacobian.png",
        "Volume change of the forward deformation (det J); green marks folding, where it is not invertible.",
    ),
    ("grid.png", "A regular grid of the moving image, drawn where the deformation puts it on the fixed image."),
    ("patch_border.png", "The network's momentum near its tile borders (network and hybrid)."),
];

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Standard base64 (RFC 4648) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn status_colour(status: Status) -> &'static str {
    match status {
        Status::Ok => "#1e8e3e",
        Status::Warning => "#c98a00",
        Status::Failed => "#c5221f",
    }
}

fn metric_row(html: &mut String, label: &str, direction: &str, metrics: &DirectionMetrics) {
    let image = &metrics.image;
    let dice: Vec<String> = image.dice.iter().map(|d| format!("<td>{:.3}</td>", d.dice)).collect();
    let _ = write!(
        html,
        "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.5}</td><td>{:.4}</td>{}<td>{:.4}</td><td>{:.3}</td></tr>",
        escape(label),
        escape(direction),
        image.nmi,
        image.mse,
        image.mae,
        dice.join(""),
        100.0 * metrics.jacobian.folding_share,
        metrics.jacobian.mean
    );
}

fn metric_rows(html: &mut String, label: &str, evaluation: &Evaluation) {
    metric_row(html, label, "moving → fixed", &evaluation.forward);
    if let Some(backward) = &evaluation.backward {
        metric_row(html, label, "fixed → moving", backward);
    }
}

/// Writes `qa/report.html` for a finished run whose figures are in `qa_dir`.
pub fn write_report_html(qa_dir: &Path, report: &Report) -> Result<PathBuf> {
    let mut html = String::new();
    let verdict = &report.verdict;
    let (date, time) = crate::io::dicom_write::date_and_time_now();
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Registration QA record</title>
<style>
body {{ font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px auto; max-width: 1100px; color: #202124; }}
h1 {{ font-size: 24px; margin-bottom: 4px; }} h2 {{ font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccc; }}
table {{ border-collapse: collapse; margin: 8px 0; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }} th {{ background: #f1f3f4; }}
.verdict {{ display: inline-block; padding: 6px 18px; color: white; font-weight: bold; font-size: 20px; border-radius: 4px; }}
figure {{ margin: 16px 0; }} figure img {{ max-width: 100%; border: 1px solid #999; }}
figcaption {{ font-size: 13px; color: #444; }} .small {{ font-size: 12px; color: #555; }}
pre {{ font-size: 11px; background: #f8f9fa; padding: 8px; overflow-x: auto; }}
</style></head><body>
<h1>Registration QA record</h1>
<p class="small">{} {} — written {}-{}-{} {}:{} UTC. Deformable registration of the moving image (pseudo-CT) to the fixed image (CT), both directions.</p>
<h2>Verdict</h2>
<p><span class="verdict" id="verdict" style="background: {}">{}</span></p>
"#,
        escape(&report.program),
        escape(&report.version),
        &date[..4],
        &date[4..6],
        &date[6..],
        &time[..2],
        &time[2..4],
        status_colour(verdict.status),
        verdict.status.name().to_uppercase()
    );
    if verdict.reasons.is_empty() {
        html.push_str("<p>Every check passed: similarity against the rigid start, overlap, same patient, folding, inverse consistency and the size of the deformation.</p>\n");
    } else {
        html.push_str("<table><tr><th>status</th><th>check</th><th>finding</th><th>value</th><th>limit</th></tr>\n");
        for reason in &verdict.reasons {
            let _ = writeln!(
                html,
                "<tr><td style=\"color: {}\">{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                status_colour(reason.status),
                reason.status.name(),
                escape(&reason.check),
                escape(&reason.message),
                reason.value,
                reason.limit
            );
        }
        html.push_str("</table>\n");
    }
    if !report.warnings.is_empty() {
        html.push_str("<p><b>Warnings</b></p><ul>\n");
        for warning in &report.warnings {
            let _ = writeln!(html, "<li>{}</li>", escape(warning));
        }
        html.push_str("</ul>\n");
    }

    html.push_str("<h2>Inputs</h2>\n<table><tr><th>role</th><th>file</th><th>bytes</th><th>CRC-32</th><th>voxels</th><th>spacing, mm</th></tr>\n");
    for input in &report.inputs {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{} × {} × {}</td><td>{:.3} × {:.3} × {:.3}</td></tr>",
            escape(&input.role),
            escape(&input.path.display().to_string()),
            input.bytes,
            escape(&input.crc32),
            input.shape[0],
            input.shape[1],
            input.shape[2],
            input.spacing_mm[0],
            input.spacing_mm[1],
            input.spacing_mm[2]
        );
    }
    html.push_str("</table>\n");

    let p = &report.parameters;
    let _ = write!(
        html,
        "<h2>Method</h2>\n<table><tr><th>method</th><td>{:?}</td></tr><tr><th>model</th><td>{}</td></tr>\
         <tr><th>similarity</th><td>{}</td></tr><tr><th>λ (regulariser)</th><td>{}</td></tr>\
         <tr><th>smoothing α, γ</th><td>{}, {}</td></tr><tr><th>resolution levels run</th><td>{:?}</td></tr>\
         <tr><th>iterations</th><td>{}</td></tr><tr><th>only the patient compared</th><td>{}</td></tr></table>\n",
        p.method,
        escape(report.model.as_deref().unwrap_or("—")),
        escape(&format!("{:?}", p.optimize.energy.similarity)),
        p.optimize.energy.lambda,
        p.optimize.smooth.alpha,
        p.optimize.smooth.gamma,
        report.levels_run,
        report.iterations,
        p.patient_only
    );
    let parameters = serde_json::to_string_pretty(&report.parameters).unwrap_or_default();
    let _ = writeln!(html, "<details><summary>Every parameter</summary><pre>{}</pre></details>", escape(&parameters));

    let r = &report.rigid;
    let q = &report.deformable_quality;
    let _ = write!(
        html,
        "<h2>Result</h2>\n<table>\
         <tr><th>rigid rotation</th><td>{:.2}°, {:.2}°, {:.2}°</td></tr>\
         <tr><th>rigid translation</th><td>{:.2}, {:.2}, {:.2} mm</td></tr>\
         <tr><th>rigid MSE (density)</th><td>{:.5} → {:.5}</td></tr>\
         <tr><th>largest deformation</th><td>{:.2} mm</td></tr>\
         <tr><th>folding voxels</th><td>{}</td></tr>\
         <tr><th>det J</th><td>min {:.3}, mean {:.3}</td></tr>\
         <tr><th>inverse consistency |φ⁻¹∘φ − Id|</th><td>mean {:.3} mm, max {:.3} mm</td></tr></table>\n",
        r.angles_deg[0],
        r.angles_deg[1],
        r.angles_deg[2],
        r.translation_mm[0],
        r.translation_mm[1],
        r.translation_mm[2],
        r.mse_before,
        r.mse_after,
        q.max_deformation_mm,
        q.folding_voxels,
        q.jacobian_min,
        q.jacobian_mean,
        q.inverse_consistency_mean_mm,
        q.inverse_consistency_max_mm
    );
    let tissues: Vec<String> = report
        .metrics
        .result
        .forward
        .image
        .dice
        .iter()
        .map(|d| format!("<th>Dice {}</th>", escape(&d.tissue)))
        .collect();
    let _ = writeln!(
        html,
        "<h3>Metrics, both directions, beside rigid alignment alone</h3>\n<table id=\"metrics\"><tr><th></th><th>direction</th><th>NMI</th><th>MSE</th><th>MAE</th>{}<th>folding %</th><th>mean det J</th></tr>",
        tissues.join("")
    );
    metric_rows(&mut html, "rigid only", &report.metrics.rigid);
    metric_rows(&mut html, "result", &report.metrics.result);
    html.push_str("</table>\n<p class=\"small\">NMI: (H(X)+H(Y))/H(X,Y), 64-bin joint histogram; MSE and MAE on density (kg/dm³); Dice of tissue classes on density (fat 0.8–0.97, water 0.97–1.15, bone &gt; 1.15).</p>\n");

    html.push_str("<h2>Time per stage</h2>\n<table><tr>");
    for (name, _) in report.timings.stages() {
        let _ = write!(html, "<th>{}</th>", escape(name));
    }
    html.push_str("<th>total</th></tr><tr>");
    for (_, seconds) in report.timings.stages() {
        let _ = write!(html, "<td>{seconds:.1} s</td>");
    }
    let _ = writeln!(html, "<td>{:.1} s</td></tr></table>", report.timings.total_s);

    if let Some(dicom) = &report.dicom {
        let _ = write!(
            html,
            "<h2>DICOM for the planning system</h2>\n<table>\
             <tr><th>warped moving image</th><td>{} slices, {} image storage, series {}</td></tr>\
             <tr><th>registration</th><td>{} (Deformable Spatial Registration; {})</td></tr>\
             <tr><th>registered frame (fixed CT)</th><td>{}</td></tr><tr><th>source frame (moving)</th><td>{}</td></tr>\
             <tr><th>identities</th><td>{}</td></tr></table>\n",
            dicom.slices,
            escape(&dicom.modality),
            escape(&dicom.series_uid),
            escape(&dicom.registration_file),
            escape(&dicom.rigid_part),
            escape(&dicom.registered_frame_of_reference_uid),
            escape(&dicom.source_frame_of_reference_uid),
            if dicom.inputs_were_dicom { "copied from the input series" } else { "made up: an input was not DICOM" }
        );
        if !dicom.structures.is_empty() {
            html.push_str("<table><tr><th>ROI</th><th>name</th><th>contours on the CT</th><th>ml on the moving image</th><th>ml carried</th></tr>\n");
            for roi in &dicom.structures {
                let _ = writeln!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td></tr>",
                    roi.number,
                    escape(&roi.name),
                    roi.contours,
                    roi.moving_ml,
                    roi.carried_ml
                );
            }
            html.push_str("</table>\n");
        }
    }

    html.push_str("<h2>Figures</h2>\n");
    for (name, caption) in CAPTIONS {
        let path = qa_dir.join(name);
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let _ = writeln!(
            html,
            "<figure><img alt=\"{name}\" src=\"data:image/png;base64,{}\"><figcaption><b>{name}</b>: {}</figcaption></figure>",
            base64(&bytes),
            escape(caption)
        );
    }
    html.push_str(
        "<h2>Review</h2>\n<table><tr><th>reviewed by</th><td style=\"width: 300px\">&nbsp;</td></tr>\
         <tr><th>date</th><td>&nbsp;</td></tr><tr><th>accepted for</th><td>&nbsp;</td></tr></table>\n</body></html>\n",
    );
    let path = qa_dir.join("report.html");
    crate::io::atomic::write_atomically(&path, |w| w.write_all(html.as_bytes()).map_err(|e| Error::io(&path, e)))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<b>\"a\" & c</b>"), "&lt;b&gt;&quot;a&quot; &amp; c&lt;/b&gt;");
    }
}
