package org.elasticsearch.plugins;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.elasticsearch.Build;
import org.elasticsearch.action.admin.cluster.node.info.PluginsAndModules;
import org.elasticsearch.common.settings.Settings;

/**
 * Loads the node's plugins (transport-netty4 and our root-endpoint plugin) from the classpath.
 * In Elasticsearch's package for the package-private LoadedPlugin record and loadPlugin helper.
 * Test infrastructure for scripts/services only.
 */
public class ClasspathPluginsService extends PluginsService {

    private final List<LoadedPlugin> classpathPlugins;
    private final PluginsAndModules classpathInfo;

    public ClasspathPluginsService(Settings settings, Path configPath, PluginsLoader loader, List<Class<? extends Plugin>> classes) {
        super(settings, configPath, loader);
        List<LoadedPlugin> loaded = new ArrayList<>();
        for (Class<? extends Plugin> cls : classes) {
            Plugin plugin = loadPlugin(cls, settings, configPath);
            PluginDescriptor descriptor = new PluginDescriptor(
                cls.getSimpleName(),
                "loaded from the classpath by scripts/services",
                Build.current().version(),
                Build.current().version(),
                Integer.toString(Runtime.version().feature()),
                cls.getName(),
                null,       // no Java module name: everything is in the unnamed module
                List.of(),  // extends no other plugin
                false, false, false, false
            );
            loaded.add(new LoadedPlugin(descriptor, plugin, cls.getClassLoader()));
        }
        loadExtensions(loaded);
        this.classpathPlugins = List.copyOf(loaded);
        this.classpathInfo = new PluginsAndModules(
            loaded.stream().map(p -> new PluginRuntimeInfo(p.descriptor())).toList(),
            List.of()
        );
    }

    @Override
    protected List<LoadedPlugin> plugins() {
        return classpathPlugins;
    }

    @Override
    public PluginsAndModules info() {
        return classpathInfo;
    }
}
