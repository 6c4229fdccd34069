//! The page that plays a path (`/{path}/`): the browser's own HLS where it has it (Safari),
//! else the vendored hls.js in low-latency mode; no external assets, so it works on isolated
//! networks. The video is `muted autoplay playsinline`: browsers block autoplay with sound.

/// hls.js (light build), served by Finch itself; see `assets/README.md`.
pub(super) const HLS_JS_SOURCE: &str = include_str!("assets/hls.light.min.js");

use crate::html::escape;

/// The player page of `path`.
pub(super) fn player(path: &str) -> String {
    let title = escape(path);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Finch</title>
<style>
html,body{{margin:0;height:100%;background:#000;color:#ddd;font-family:system-ui,sans-serif}}
video{{width:100%;height:100%;object-fit:contain;display:block}}
#status{{position:fixed;left:8px;bottom:8px;font-size:12px;opacity:.7}}
</style></head>
<body>
<video id="video" muted autoplay playsinline controls></video>
<div id="status">{title}</div>
<script src="{js}"></script>
<script>
(function () {{
  var video = document.getElementById('video');
  var status = document.getElementById('status');
  var src = 'index.m3u8';
  function say(t) {{ status.textContent = {title_js} + ' · ' + t; }}
  if (window.Hls && Hls.isSupported()) {{
    var hls = new Hls({{ lowLatencyMode: true, backBufferLength: 30 }});
    hls.on(Hls.Events.ERROR, function (_, d) {{
      if (d.fatal) {{
        say('error: ' + d.details + ', retrying');
        setTimeout(function () {{ hls.loadSource(src); hls.startLoad(); }}, 2000);
      }}
    }});
    hls.on(Hls.Events.MANIFEST_PARSED, function () {{ video.play().catch(function () {{}}); say('live'); }});
    hls.loadSource(src);
    hls.attachMedia(video);
    window.finchHls = hls;
  }} else if (video.canPlayType('application/vnd.apple.mpegurl')) {{
    video.src = src;
    video.addEventListener('loadedmetadata', function () {{ video.play().catch(function () {{}}); say('live'); }});
  }} else {{
    say('this browser cannot play HLS');
  }}
}})();
</script>
</body></html>
"#,
        js = super::http::HLS_JS,
        title_js = serde_json::to_string(path)
            .unwrap_or_else(|_| "\"\"".into())
            .replace('<', "\\u003c"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_escaped_in_html_and_in_script() {
        let p = player("a<b>\"c'/</script>");
        assert!(!p.contains("a<b>"));
        assert!(!p.contains("</script>\"") && !p.contains("'/</script>"));
        assert!(p.contains("muted autoplay playsinline"));
        assert!(p.contains(super::super::http::HLS_JS));
    }
}
