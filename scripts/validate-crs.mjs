// Validates custom resources against their CRD schemas as shipped on npm (the
// @kubernetes-models packages, generated from the projects' CRDs).
// Owns: the CRD-schema check of the objects scripts/validate-k8s.py set aside.
// Must hold: every object given is validated or the run fails; an object of a kind not
// listed here is a failure, never silently passed.
// Usage: node validate-crs.mjs NODE_MODULES_DIR OBJECTS.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, input] = process.argv.slice(2);
const MODELS = {
  "monitoring.coreos.com/v1/ServiceMonitor":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
};

let failures = 0;
let valid = 0;
for (const { source, object } of JSON.parse(readFileSync(input, "utf8"))) {
  const key = `${object.apiVersion}/${object.kind}`;
  if (!MODELS[key]) {
    console.error(`INVALID ${source}: no CRD schema module for ${key}`);
    failures++;
    continue;
  }
  const mod = await import(pathToFileURL(join(modules, MODELS[key])).href);
  try {
    new mod[object.kind](object).validate();
    valid++;
  } catch (e) {
    console.error(`INVALID ${source}: ${e.message}`);
    failures++;
  }
}
console.log(`custom resources: ${valid} valid against their CRD schemas, ${failures} problems`);
process.exit(failures ? 1 : 0);
