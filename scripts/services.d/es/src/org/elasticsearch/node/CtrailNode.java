package org.elasticsearch.node;

import java.util.List;
import java.util.Map;
import java.util.Set;

import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.ClasspathPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;

/**
 * A node whose plugins are classes on the classpath instead of bundles in a distribution's
 * modules/ folder (we have jars from Maven Central, not a distribution).
 *
 * It sits in Elasticsearch's own package because NodeConstruction and NodeServiceProvider are
 * package-private; Elasticsearch's test framework (MockNode) uses the same hook.
 * Test infrastructure for scripts/services only.
 */
public class CtrailNode extends Node {

    public CtrailNode(Environment environment, List<Class<? extends Plugin>> pluginClasses) {
        super(
            NodeConstruction.prepareConstruction(
                environment,
                // nothing to load from disk: no module or plugin bundles; and no qualified-exports
                // wiring, which needs the server jar as a named module (it is on the classpath)
                PluginsLoader.createPluginsLoader(Set.of(), Set.of(), Map.of(), false),
                new NodeServiceProvider() {
                    @Override
                    PluginsService newPluginService(Environment env, PluginsLoader loader) {
                        return new ClasspathPluginsService(env.settings(), env.configDir(), loader, pluginClasses);
                    }
                },
                true // forbid private index settings, as a real node does
            )
        );
    }
}
