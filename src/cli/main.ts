#!/usr/bin/env node
// The entry point only makes V8's start-up settings, then loads the command line: static
// imports are all resolved before any module runs, so anything meant to hold during the
// module loading must be set before the rest of the program is imported.
import './young-generation.js'; // the young generation held small while starting
import './start-tiering.js'; // TurboFan held back until the broker listens
await import('./program.js');
