#!/usr/bin/env node
import './young-generation.js'; // first: it must run before the other modules load
import { Command } from 'commander';
import { registerStart } from './start.js';
import { register as registerClients } from './clients.js';
import { register as registerState } from './state.js';
import { register as registerRules } from './rules.js';
import { register as registerPasswd } from './passwd.js';
import { register as registerToken } from './token.js';
import { VERSION } from '../version.js'; // not server.js: `edb state get` must not load the broker

/** `edb`: each subcommand lives in its own module and registers itself here. */
const program = new Command();
program
  .name('edb')
  .description('Edge Data Broker: an MQTT 3.1.1/5.0 broker for the edge')
  .version(VERSION, '-v, --version')
  .showHelpAfterError();

registerStart(program); // edb start
registerClients(program); // edb clients, edb subscriptions
registerRules(program); // edb rules get|set|patch|delete
registerState(program); // edb state get|set|del|watch
registerPasswd(program); // edb passwd FILE USER [--role]
registerToken(program); // edb token create|list|revoke

await program.parseAsync(process.argv);
