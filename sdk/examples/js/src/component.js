// The component's entry point: binds `carrier.js` to Herald's imports and
// exports interface `carrier` of world `herald:plugin/carrier-plugin@0.1.0`.
// Everything else lives in `carrier.js`, which `node --test` runs natively.

import { configGet, log } from 'herald:plugin/host@0.1.0';
import { fetch } from 'herald:plugin/http@0.1.0';

import { createCarrier, logUncaught } from './carrier.js';

export const carrier = logUncaught(createCarrier({ configGet, log, fetch }), log);
