// Draws an inspected graph as SVG: one column per layer (depth from the graph's sources), a box per
// node with its linked inputs on the left and its outputs on the right, ports and links coloured by
// port type, and a status class per node that the live events update.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 190;
const HEADER = 36;
const ROW = 18;
const COLUMN_GAP = 70;
const ROW_GAP = 22;

// Ten well-separated colours (matplotlib's "tab10"); types past ten get golden-angle hues.
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];

/**
 * Colours for the port types of one drawing, given in sorted order of their names, so the types of
 * one drawing stay distinguishable and the legend matches.
 */
export function typeColours(types) {
  const colours = new Map();
  [...new Set(types)].sort().forEach((type, i) => {
    const hue = Math.round((i * 137.508 + 15) % 360);
    colours.set(type, i < PALETTE.length ? PALETTE[i] : `hsl(${hue} 55% ${i % 2 ? 32 : 55}%)`);
  });
  return colours;
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Lay out nodes by layer: a column per layer, each column's nodes ordered by the mean row of the
 * nodes feeding them (fewer crossings) and centred vertically. Returns the boxes and the size.
 */
function layout(graph) {
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const linked = new Map(graph.nodes.map((n) => [n.id, new Set()]));
  const sources = new Map(graph.nodes.map((n) => [n.id, []]));
  for (const link of graph.links) {
    linked.get(link.to[0])?.add(link.to[1]);
    sources.get(link.to[0])?.push(link.from[0]);
  }
  const layers = graph.layers.map((layer) => layer.filter((id) => byId.has(id)));
  const placed = new Set(layers.flat());
  const rest = graph.nodes.map((n) => n.id).filter((id) => !placed.has(id));
  if (rest.length) layers.push(rest);
  const row = new Map();
  for (const layer of layers) {
    const weight = (id) => {
      const rows = sources.get(id).filter((s) => row.has(s)).map((s) => row.get(s));
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : layer.indexOf(id);
    };
    layer.sort((a, b) => weight(a) - weight(b));
    layer.forEach((id, i) => row.set(id, i));
  }
  const boxes = {};
  const heights = [];
  layers.forEach((layer, column) => {
    let y = 0;
    for (const id of layer) {
      const node = byId.get(id);
      const inputs = node.inputs.filter((p) => linked.get(id).has(p.name));
      const outputs = node.outputs;
      const rows = Math.max(inputs.length, outputs.length, 1);
      const box = { x: column * (WIDTH + COLUMN_GAP), y, height: HEADER + rows * ROW + 6, inputs, outputs };
      boxes[id] = box;
      y += box.height + ROW_GAP;
    }
    heights.push(Math.max(y - ROW_GAP, 0));
  });
  const height = Math.max(...heights, 0);
  layers.forEach((layer, column) => {
    for (const id of layer) boxes[id].y += (height - heights[column]) / 2;
  });
  return { boxes, width: layers.length * (WIDTH + COLUMN_GAP) - COLUMN_GAP, height };
}

function portY(box, index) {
  return box.y + HEADER + index * ROW + ROW / 2;
}

function drawNode(node, box, status, colours) {
  const group = el("g", {
    class: `node status-${status}`,
    "data-node": node.id,
    tabindex: "0",
    role: "img",
    "aria-label": `node ${node.id}, ${node.type}, ${status}`,
  });
  group.append(el("title", {}, `${node.id} (${node.type})${node.doc ? `\n${node.doc}` : ""}`));
  group.append(el("rect", { x: box.x, y: box.y, width: WIDTH, height: box.height, rx: 6, class: "box" }));
  group.append(el("text", { x: box.x + 8, y: box.y + 15, class: "node-id" }, node.id));
  group.append(el("text", { x: box.x + 8, y: box.y + 29, class: "node-type" }, node.type));
  box.inputs.forEach((port, i) => {
    const y = portY(box, i);
    group.append(el("circle", { cx: box.x, cy: y, r: 5, fill: colours.get(port.type), class: "port" }));
    group.append(el("text", { x: box.x + 9, y: y + 4, class: "port-name" }, port.name));
  });
  box.outputs.forEach((port, i) => {
    const y = portY(box, i);
    group.append(el("circle", { cx: box.x + WIDTH, cy: y, r: 5, fill: colours.get(port.type), class: "port" }));
    group.append(el("text", { x: box.x + WIDTH - 9, y: y + 4, class: "port-name", "text-anchor": "end" },
      port.name));
  });
  return group;
}

/** Draw `graph` (a POST /api/inspect answer) into `svg`; returns the colour of each port type. */
export function drawGraph(svg, graph) {
  svg.replaceChildren();
  const { boxes, width, height } = layout(graph);
  const colours = typeColours(Object.values(boxes).flatMap((b) => [...b.inputs, ...b.outputs].map((p) => p.type)));
  const pad = 12;
  svg.setAttribute("viewBox", `${-pad} ${-pad} ${width + 2 * pad} ${height + 2 * pad}`);
  svg.style.aspectRatio = `${width + 2 * pad} / ${height + 2 * pad}`;
  const links = el("g", { class: "links" });
  for (const link of graph.links) {
    const from = boxes[link.from[0]];
    const to = boxes[link.to[0]];
    if (!from || !to) continue;
    const out = from.outputs.findIndex((p) => p.name === link.from[1]);
    const inp = to.inputs.findIndex((p) => p.name === link.to[1]);
    const x1 = from.x + WIDTH;
    const y1 = portY(from, Math.max(out, 0));
    const x2 = to.x;
    const y2 = portY(to, Math.max(inp, 0));
    const bend = Math.max(40, (x2 - x1) / 2);
    links.append(el("path", {
      d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
      stroke: colours.get(link.type) ?? "#888",
      class: "link",
      "data-from": link.from.join("."),
      "data-to": link.to.join("."),
    }));
  }
  svg.append(links);
  for (const node of graph.nodes) svg.append(drawNode(node, boxes[node.id], "pending", colours));
  return colours;
}

/** Show a node's run status ("pending", "running", "cached", "done", "failed"). */
export function setNodeStatus(svg, nodeId, status) {
  const group = svg.querySelector(`g.node[data-node="${CSS.escape(nodeId)}"]`);
  if (!group) return;
  group.setAttribute("class", `node status-${status}`);
  const label = group.getAttribute("aria-label").replace(/, [a-z]+$/, `, ${status}`);
  group.setAttribute("aria-label", label);
}

/** Reset every node to "pending". */
export function resetStatuses(svg) {
  for (const group of svg.querySelectorAll("g.node")) setNodeStatus(svg, group.dataset.node, "pending");
}

/** The legend: one swatch per port type drawn (`colours` as drawGraph returns it). */
export function drawLegend(list, colours) {
  list.replaceChildren();
  for (const [type, colour] of colours) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour;
    item.append(swatch, document.createTextNode(type));
    list.append(item);
  }
}
