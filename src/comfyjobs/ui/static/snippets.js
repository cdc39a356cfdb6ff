// The request the form would send, as code to copy: curl, and Python with api_client_minimal.

function shellQuote(text) {
  return `'${String(text).replace(/'/g, `'\\''`)}'`;
}

export function asCurl(origin, body, keyed) {
  const lines = [`curl -sS -X POST ${shellQuote(`${origin}/generate`)}`, `  -H 'Content-Type: application/json'`];
  if (keyed) lines.push(`  -H "X-API-Key: $COMFYJOBS_API_KEY"`);
  lines.push(`  -d ${shellQuote(JSON.stringify(body))}`);
  return lines.join(" \\\n");
}

function pyValue(value) {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) return `[${value.map(pyValue).join(", ")}]`;
  if (typeof value === "object") return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyValue(v)}`).join(", ")}}`;
  return JSON.stringify(value);
}

export function asPython(origin, body) {
  const priority = body.priority !== undefined ? `, priority=${body.priority}` : "";
  return [
    "import api_client_minimal as cj  # the API key: COMFYJOBS_API_KEY",
    `task_id = cj.generate(${JSON.stringify(body.workflow_id)}, ${pyValue(body.params)}${priority}, server=${JSON.stringify(origin)})`,
    `task = cj.wait(task_id, server=${JSON.stringify(origin)})`,
  ].join("\n");
}
