// The original voice-call plugin's webhook server, standalone, for bench.webhooks (mode original).
//
//   node original.mjs ENTRY STORE_DIR
//
// ENTRY is the plugin's runtime-entry.js inside the npm package openclaw (see ORIGINAL_HELP in
// bench/webhooks.py). Twilio provider, signatures not checked, inbound calls accepted; the
// public URL is a placeholder (the plugin refuses a loopback one for Twilio, and no carrier
// calls it). Prints "ready PORT" on stdout once listening; SIGTERM stops it.
import { pathToFileURL } from "node:url";

const [entry, store] = process.argv.slice(2);
const quiet = () => {};
console.log = quiet; // the plugin logs every webhook's event on stdout: not ours to print
console.info = quiet;
console.warn = (...args) => process.stderr.write(`${args.join(" ")}\n`);
const logger = { info: quiet, debug: quiet, warn: console.warn, error: console.warn };

const { createVoiceCallRuntime } = await import(pathToFileURL(entry).href);
const runtime = await createVoiceCallRuntime({
  config: {
    enabled: true,
    provider: "twilio",
    skipSignatureVerification: true,
    publicUrl: "https://bench.invalid/voice/webhook",
    fromNumber: "+15550000000",
    inboundPolicy: "open",
    maxConcurrentCalls: 1000,
    store,
    serve: { port: 0, bind: "127.0.0.1", path: "/voice/webhook" },
    twilio: { accountSid: `AC${"0".repeat(32)}`, authToken: "x" },
  },
  coreConfig: {},
  logger,
});
const address = runtime.webhookServer.server.address();
process.stdout.write(`ready ${address.port}\n`);
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, async () => {
    await runtime.stop();
    process.exit(0);
  });
}
