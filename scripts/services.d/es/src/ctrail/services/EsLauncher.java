package ctrail.services;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.CtrailNode;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.transport.netty4.Netty4Plugin;

/**
 * Starts one Elasticsearch node for the integration tests and keeps it running until the process
 * is signalled (scripts/services down sends SIGTERM; the shutdown hook closes the node cleanly).
 *
 * Usage: java -cp 'lib/*:classes' ctrail.services.EsLauncher HOME HTTP_PORT TRANSPORT_PORT
 * HOME holds config/, data/ and logs/. Loopback only, single node, no security: there is no
 * x-pack on the classpath, so the node speaks plain HTTP without authentication.
 */
public final class EsLauncher {

    // Console logging only: scripts/services sends stdout to the service log it tails on failure.
    private static final String LOG4J2 = String.join("\n",
        "status = error",
        "appender.console.type = Console",
        "appender.console.name = console",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n",
        "rootLogger.level = info",
        "rootLogger.appenderRef.console.ref = console",
        // deprecation warnings go to the response headers as usual; keep them out of the log
        "logger.deprecation.name = org.elasticsearch.deprecation",
        "logger.deprecation.level = error",
        "");

    private EsLauncher() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: EsLauncher HOME HTTP_PORT TRANSPORT_PORT");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        Path config = home.resolve("config");
        Files.createDirectories(config);
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        Files.writeString(config.resolve("log4j2.properties"), LOG4J2, StandardCharsets.UTF_8);

        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "ctrail-test")
            .put("node.name", "ctrail-es")
            // loopback only: this also keeps the production bootstrap checks off
            .put("network.host", "127.0.0.1")
            .put("http.port", args[1])
            .put("transport.port", args[2])
            .put("discovery.type", "single-node")
            // a developer's nearly full disk must not turn test indices read-only
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();

        Environment env = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> "ctrail-es");
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName("ctrail-es");
        LogConfigurator.configure(env, true);

        List<Class<? extends Plugin>> plugins = List.of(Netty4Plugin.class, RootInfoPlugin.class);
        Node node = new CtrailNode(env, plugins);

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "ctrail-es-shutdown"));

        node.start();
        System.out.println("ctrail-es: started on http://127.0.0.1:" + args[1]);
        stopped.await(); // Elasticsearch's own threads are daemons: keep the JVM alive here
    }
}
