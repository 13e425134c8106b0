#!/usr/bin/env node
import { Command } from 'commander';
import { registerStart } from './start.js';
import { register as registerClients } from './clients.js';
import { register as registerState } from './state.js';
import { register as registerRules } from './rules.js';
import { VERSION } from '../server.js';

/** `edb`: each subcommand lives in its own module and registers itself here. */
const program = new Command();
program
  .name('edb')
  .description('Edge Data Broker: an MQTT 3.1.1/5.0 broker for the edge')
  .version(VERSION, '-v, --version')
  .showHelpAfterError();

registerStart(program);
registerClients(program); // edb clients, edb subscriptions
registerState(program);
registerRules(program); // edb rules get|set|patch|delete

await program.parseAsync(process.argv);
