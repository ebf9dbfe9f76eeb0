// The graph's params as a form: one labelled field per param with its declared type, range and
// choices, and the values read back as the `set` of a job (only those that differ from the default,
// so the job's CLI command stays the one a person would type).

function fieldFor(param, id) {
  if (param.choices && param.choices.length) {
    const select = document.createElement("select");
    for (const choice of param.choices) {
      const option = document.createElement("option");
      option.value = JSON.stringify(choice);
      option.textContent = String(choice);
      select.append(option);
    }
    if (param.default !== undefined) select.value = JSON.stringify(param.default);
    select.id = id;
    return select;
  }
  const input = document.createElement("input");
  input.id = id;
  if (param.type === "bool") {
    input.type = "checkbox";
    input.checked = Boolean(param.default);
    return input;
  }
  if (param.type === "int" || param.type === "float") {
    input.type = "number";
    input.step = param.type === "int" ? "1" : "any";
    if (param.minimum !== undefined && param.minimum !== null) input.min = String(param.minimum);
    if (param.maximum !== undefined && param.maximum !== null) input.max = String(param.maximum);
  } else {
    input.type = "text";
  }
  if (param.default !== undefined && param.default !== null) {
    input.value = param.type === "list" ? JSON.stringify(param.default) : String(param.default);
  }
  if (param.default === undefined || param.default === null) input.required = true; // must be given
  return input;
}

/** Fill `container` with one field per param. */
export function buildForm(container, params) {
  container.replaceChildren();
  for (const param of params) {
    const id = `param-${param.name}`;
    const row = document.createElement("div");
    row.className = "param";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = param.name;
    const field = fieldFor(param, id);
    field.name = param.name;
    field.dataset.type = param.type;
    const hint = document.createElement("small");
    const range = [
      param.type,
      param.minimum !== undefined && param.minimum !== null ? `≥ ${param.minimum}` : "",
      param.maximum !== undefined && param.maximum !== null ? `≤ ${param.maximum}` : "",
    ].filter(Boolean).join(", ");
    hint.id = `${id}-hint`;
    hint.textContent = param.description ? `${param.description} (${range})` : range;
    field.setAttribute("aria-describedby", hint.id);
    row.append(label, field, hint);
    container.append(row);
  }
}

function readField(field) {
  if (field.tagName === "SELECT") return JSON.parse(field.value);
  const type = field.dataset.type;
  if (type === "bool") return field.checked;
  if (type === "int") return field.value === "" ? undefined : parseInt(field.value, 10);
  if (type === "float") return field.value === "" ? undefined : parseFloat(field.value);
  if (type === "list") return field.value === "" ? undefined : JSON.parse(field.value);
  return field.value;
}

/**
 * The form's values as a job's `set`: params whose value differs from the declared default.
 * Throws an Error naming the param when a field cannot be read (a list that is not JSON).
 */
export function readSet(container, params) {
  const set = {};
  for (const param of params) {
    const field = container.querySelector(`[name="${CSS.escape(param.name)}"]`);
    let value;
    try {
      value = readField(field);
    } catch {
      throw new Error(`param '${param.name}': not a JSON list`);
    }
    if (value === undefined) continue;
    if (JSON.stringify(value) !== JSON.stringify(param.default)) set[param.name] = value;
  }
  return set;
}

/** Put `set` values into the form (re-run with the values of an earlier job). */
export function applySet(container, params, set) {
  for (const param of params) {
    const field = container.querySelector(`[name="${CSS.escape(param.name)}"]`);
    const value = param.name in set ? set[param.name] : param.default;
    if (!field || value === undefined) continue;
    if (field.tagName === "SELECT") field.value = JSON.stringify(value);
    else if (field.type === "checkbox") field.checked = Boolean(value);
    else field.value = param.type === "list" ? JSON.stringify(value) : String(value);
  }
}
