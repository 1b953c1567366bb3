// Preloaded into Portkey's gateway by bench/llm.sh (node --import ./portkey-loopback.mjs ...).
// Its start script (build/start-server.js) takes --port=N but no host, and @hono/node-server then
// listens on every interface; the benchmark keeps everything on 127.0.0.1. This makes a listen()
// given a port and no host listen on 127.0.0.1. Nothing else is changed.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
    if (typeof args[0] === "number" && (args[1] === undefined || typeof args[1] === "function")) {
        if (args[1] === undefined) args[1] = "127.0.0.1";
        else args.splice(1, 0, "127.0.0.1");
    }
    return listen.apply(this, args);
};
