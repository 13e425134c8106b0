// The edb command line (main.ts loads it once V8's start-up settings are made).
import { Command, CommanderError } from 'commander';
import { registerStart } from './start.js';
import { register as registerClients } from './clients.js';
import { register as registerState } from './state.js';
import { register as registerRules } from './rules.js';
import { register as registerPasswd } from './passwd.js';
import { register as registerToken } from './token.js';
import { register as registerStorage } from './storage.js';
import { register as registerBridge } from './bridge.js';
import { register as registerCluster } from './cluster.js';
import { EXIT, EXIT_CODES_HELP } from './exit-codes.js';
import { VERSION } from '../version.js'; // not server.js: `edb state get` must not load the broker

/** `edb`: each subcommand lives in its own module and registers itself here. */
const program = new Command();
program
  .name('edb')
  .description('Edge Data Broker: an MQTT 3.1.1/5.0 broker for the edge')
  .version(VERSION, '-v, --version')
  .addHelpText('after', `\n${EXIT_CODES_HELP}`)
  .showHelpAfterError('(run the command with --help for its usage)')
  // usage errors exit with EXIT.usage (commander's own default is 1, which means "failed" here)
  .exitOverride()
  .configureOutput({ outputError: (text, write) => write(text.replace(/^error: /, 'edb: ')) });

// subcommands inherit exitOverride and the output settings from `program`
registerStart(program); // edb start
registerClients(program); // edb clients, edb subscriptions
registerRules(program); // edb rules get|set|patch|delete
registerState(program); // edb state get|set|del|watch
registerPasswd(program); // edb passwd FILE USER [--role]
registerToken(program); // edb token create|list|revoke
registerStorage(program); // edb storage show
registerBridge(program); // edb bridge show
registerCluster(program); // edb cluster show

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version end here too, with exit code 0
    process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  } else {
    // a bug, not a user mistake: one line, the stack only when asked for
    process.stderr.write(`edb: internal error: ${(err as Error).message}; please report it (EDB_LOG_LEVEL=debug shows the stack)\n`);
    if (process.env['EDB_LOG_LEVEL'] === 'debug' || process.env['EDB_LOG_LEVEL'] === 'trace') process.stderr.write(`${(err as Error).stack}\n`);
    process.exitCode = EXIT.failed;
  }
}
