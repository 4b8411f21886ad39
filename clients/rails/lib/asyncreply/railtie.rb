# frozen_string_literal: true

module Asyncreply
  # Includes Asyncreply::Controller in Rails' controllers and applies
  # <tt>config.asyncreply</tt>:
  #
  # [+adapter+]
  #   <tt>:gateway</tt>, <tt>:inline</tt>, <tt>:test</tt> or an adapter
  #   object (see Asyncreply::Adapters). Defaults to <tt>:test</tt> in the
  #   test environment, <tt>:inline</tt> in development and
  #   <tt>:gateway</tt> in every other.
  # [+progress_timeout+]
  #   Seconds a progress report may delay the action. Defaults to 1.
  class Railtie < ::Rails::Railtie
    config.asyncreply = ActiveSupport::OrderedOptions.new

    # The adapter of an environment without <tt>config.asyncreply.adapter</tt>.
    def self.default_adapter(env)
      if env.test?
        :test
      elsif env.development?
        :inline
      else
        :gateway
      end
    end

    initializer "asyncreply.controller" do
      ActiveSupport.on_load(:action_controller_base) { include Asyncreply::Controller }
      ActiveSupport.on_load(:action_controller_api) { include Asyncreply::Controller }
    end

    # After the initializers, so that config/initializers may set the options too.
    config.after_initialize do |app|
      options = app.config.asyncreply
      Asyncreply.adapter = options.adapter || Railtie.default_adapter(::Rails.env)
      Asyncreply.progress_timeout = options.progress_timeout if options.progress_timeout
    end
  end
end
