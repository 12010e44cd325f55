// Run the Khronos glTF validator (npm package gltf-validator) on one .glb/.gltf file and print
// its issue counts and first messages as JSON. Usage: node gltf_validate.js VALIDATOR_DIR FILE
const fs = require('fs');
const path = require('path');
const validator = require(process.argv[2]);
const file = process.argv[3];
validator.validateBytes(new Uint8Array(fs.readFileSync(file)), {
  uri: path.basename(file),
  externalResourceFunction: (uri) => new Promise((resolve, reject) => {
    try { resolve(new Uint8Array(fs.readFileSync(path.join(path.dirname(file), decodeURIComponent(uri))))); }
    catch (e) { reject(e.toString()); }
  }),
}).then((report) => {
  console.log(JSON.stringify({errors: report.issues.numErrors, warnings: report.issues.numWarnings,
                              messages: report.issues.messages.slice(0, 20)}));
}).catch((e) => { console.error(String(e)); process.exit(2); });
