// The dashboard's sign-in form in Node, without a browser (tests/test_dashboard.py): the
// page's own script runs against a stand-in DOM just large enough for the form, with
// fetch sent to a real engine. Prints what the form then shows, as JSON.
// Usage: node tests/dashboard_signin.js SCRIPT_FILE ENGINE_URL TOKEN PROJECT_ID
"use strict";
const fs = require("fs");
const [scriptFile, engineUrl, token, projectId] = process.argv.slice(2);

function element() {
  return {
    value: "", hidden: true, textContent: "", className: "", dataset: {}, listeners: {},
    addEventListener(type, listener) { this.listeners[type] = listener; },
    replaceChildren() {}, appendChild() {}, setAttribute() {},
  };
}
const elements = new Map();
const requests = [];
globalThis.document = {
  getElementById(id) { if (!elements.has(id)) { elements.set(id, element()); } return elements.get(id); },
  querySelectorAll() { return []; },
  createElement: element,
};
const stored = new Map();
globalThis.sessionStorage = {
  getItem: (k) => (stored.has(k) ? stored.get(k) : null), setItem: (k, v) => stored.set(k, v), clear: () => stored.clear(),
};
globalThis.window = { addEventListener() {} };
globalThis.location = { reload() {} };
const realFetch = globalThis.fetch;
globalThis.fetch = (path, init) => { requests.push(path); return realFetch(engineUrl + path, init); };
globalThis.setInterval = () => 0;

(async () => {
  new Function(fs.readFileSync(scriptFile, "utf8"))();  // the page's script, as served
  const $ = (id) => document.getElementById(id);
  $("token").value = token; $("project-id").value = projectId;
  await $("signin").listeners.submit({ preventDefault() {} });
  console.log(JSON.stringify({ error: $("signin-error").textContent, requests, signedIn: stored.has("ah-token") }));
})().catch((error) => { console.error(error); process.exit(1); });
