() => {
  // ←/→ move the visible tab's frame scrubber (not while typing in a text field)
  document.addEventListener('keydown', (e) => {
    const tag = (e.target && e.target.tagName) || '';
    if (['INPUT', 'TEXTAREA', 'SELECT'].includes(tag) && e.target.type !== 'range') return;
    const ids = {ArrowRight: ['next_frame', 'cmp_next'], ArrowLeft: ['prev_frame', 'cmp_prev']}[e.key];
    if (!ids) return;
    for (const id of ids) {
      const b = document.getElementById(id);
      if (b && b.offsetParent !== null) { b.click(); e.preventDefault(); return; }
    }
  });

  // hover tooltips on the heatmap and the cache map, from the JSON the server writes into #hover_data
  const tip = document.createElement('div');
  tip.id = 'token_tip';
  tip.style.cssText = 'position:fixed;pointer-events:none;z-index:10000;display:none;background:rgba(20,20,20,.88);' +
    'color:#fff;font:12px/1.35 monospace;padding:5px 7px;border-radius:4px;white-space:pre;max-width:460px';
  document.body.appendChild(tip);
  const fmt = (v) => (v === null || v === undefined) ? '-' : Number(v).toFixed(3);
  const canvases = new Map();
  const pixel = (img, x, y) => {
    let c = canvases.get(img.src);
    if (!c) {
      if (canvases.size > 8) canvases.clear();
      c = document.createElement('canvas');
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      c.getContext('2d', {willReadFrequently: true}).drawImage(img, 0, 0);
      canvases.set(img.src, c);
    }
    return c.getContext('2d').getImageData(x, y, 1, 1).data;
  };
  const STATUS_NAMES = ['not generated yet', 'cached', 'evicted', 'prompt anchor (cached)'];   // views.STATUS_RGB order
  const statusOf = (p, colours) => {
    let best = null, dist = 1e9;
    for (const [rgb, name] of (colours || []).map((c, i) => [c, STATUS_NAMES[i]])) {
      const d = Math.abs(rgb[0] - p[0]) + Math.abs(rgb[1] - p[1]) + Math.abs(rgb[2] - p[2]);
      if (d < dist) { dist = d; best = name; }
    }
    return dist < 60 ? best : null;
  };
  const tokenText = (d, x, y) => {
    const tx = Math.floor(x / d.cell), ty = Math.floor(y / (d.cell_h || d.cell));
    if (x < 0 || y < 0 || tx >= d.grid || ty >= (d.rows || d.grid)) return null;
    const i = ty * d.grid + tx, v = d.values[i] || [], ev = d.evicted[i] || [];
    const layers = v.slice(1).map((a, l) => `L${l} ${fmt(a)}`).join('  ');
    const kept = ev.map((c, l) => c < 0 ? `L${l} cached` : `L${l} evicted at chunk ${c}`).join(' · ');
    return `frame ${d.frame} · row ${ty}, column ${tx} (token ${i} of the frame)\n` +
      `${d.signal} [${d.unit}] at chunk ${d.chunk}: mean ${fmt(v[0])}\n${layers}\n` +
      `age at the newest chunk (${d.now}): ${d.now - d.chunk} chunks\n${kept}`;
  };
  const mapText = (d, img, x, y) => {
    const m = d.map; if (!m) return null;
    const layer = Math.floor(x / (m.block_w + m.gap)), bx = x - layer * (m.block_w + m.gap);
    const row = Math.floor((y - m.top) / m.row_h);
    if (layer < 0 || layer >= m.n_layer || bx >= m.block_w || y < m.top || row < 0 || row > m.n_frames) return null;
    const t = Math.floor(bx / m.cell_w) * (m.per_cell || 1);
    const st = statusOf(pixel(img, x, y), m.status_rgb) || 'scrubbed-frame marker';
    if (row === 0) return `layer ${layer} · prompt slot ${t}: ${st}`;
    const f = row - 1;
    return `layer ${layer} · frame ${f} · row ${Math.floor(t / m.grid)}, column ${t % m.grid}\n` +
      `at the scrubbed time (frame ${d.frame}): ${st}` + (f <= d.frame ? `\nage then: ${Math.floor(d.frame / m.chunk_frames) - Math.floor(f / m.chunk_frames)} chunks` : '');
  };
  document.addEventListener('mousemove', (e) => {
    // by position, not by event target: the image component lays other elements over its img
    const img = [...document.querySelectorAll('#heatmap img, #cachemap img')].find((i) => {
      const b = i.getBoundingClientRect();
      return e.clientX >= b.left && e.clientX < b.right && e.clientY >= b.top && e.clientY < b.bottom;
    });
    if (!img || !img.naturalWidth) { tip.style.display = 'none'; return; }
    let d = {};
    try { d = JSON.parse((document.querySelector('#hover_data textarea') || {}).value || '{}'); } catch (err) { d = {}; }
    if (!d.grid) { tip.style.display = 'none'; return; }
    const r = img.getBoundingClientRect();
    const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
    const ox = (r.width - img.naturalWidth * s) / 2, oy = (r.height - img.naturalHeight * s) / 2;
    const x = Math.floor((e.clientX - r.left - ox) / s), y = Math.floor((e.clientY - r.top - oy) / s);
    const text = img.closest('#heatmap') ? tokenText(d, x, y) : mapText(d, img, x, y);
    if (!text) { tip.style.display = 'none'; return; }
    tip.textContent = text;
    tip.style.left = (e.clientX + 14) + 'px'; tip.style.top = (e.clientY + 14) + 'px';
    tip.style.display = 'block';
  });
}
